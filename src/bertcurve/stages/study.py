"""A whole study in one command: prepare -> train -> analyze -> plot -> report.

    bertcurve study                                # demo: built-in corpus, about 5 minutes on a 2-core CPU
    bertcurve study corpus.txt --preset seed-100k  # the seed's setup on your corpus (for a GPU)

    bertcurve study --seeds 0,1,2                  # the same study trained from three seeds

Everything goes into one folder (default studies/PRESET): data/ (the prepared
data directory), run/ (the training run, with analysis.json, figures/,
report.md and report.html) and study.json (stage times and the hardware).
With --seeds, each seed trains into run-seedN/ (a normal run dir, analysed,
plotted and reported like run/), and the study folder gets the across-seed
comparison (comparison.json, seed_bands.png) and report.md/report.html with
the mean curve, its band and the spread of the final accuracy.
Running the same command again skips every finished stage and resumes an
interrupted training from its newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bertcurve import __version__, layout
from bertcurve.errors import UserError
from bertcurve.fsutil import read_json, write_json
from bertcurve.training.config import TrainConfig, build_config, load_run_config, to_dict

STUDY_FORMAT = "bertcurve.stages.study/1"
STAGES = ("prepare", "train", "analyze", "plot", "report")
SEED_RUN_PREFIX = layout.SEED_RUN_PREFIX   # run-seed0/, run-seed1/, ... with --seeds


def seed_run_dir(out_dir: Path, seed: int) -> Path:
    """The run dir of one seed of a multi-seed study."""
    return out_dir / f"{SEED_RUN_PREFIX}{seed}"


@dataclass(frozen=True)
class StudyPreset:
    """What a study preset fixes: the training preset and the corpus used when none is given."""

    train_preset: str
    default_inputs: tuple[str, ...]
    description: str


PRESETS: dict[str, StudyPreset] = {
    "demo": StudyPreset("demo", ("demo",),
                        "built-in corpus (People's Daily 1998 + reviews), small BERT, ~5 minutes on 2 CPU cores"),
    "seed-50k": StudyPreset("seed-50k", (),
                            "the seed's 48M model, batch 128 and schedule for 50,000 steps (GPU)"),
    "seed-100k": StudyPreset("seed-100k", (),
                             "the seed's 48M model, batch 128 and schedule for 100,000 steps (GPU)"),
}


@dataclass
class StageRecord:
    name: str
    status: str            # "done", "skipped" (up to date), "interrupted"
    seconds: float
    detail: str = ""
    signature: dict = field(default_factory=dict)   # inputs' mtimes and options the outputs were made from


@dataclass
class StudyResult:
    """Where everything is, and what each stage did."""

    out: Path
    data_dir: Path
    run_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    completed: bool = False
    final_eval: dict | None = None
    seed_runs: list[Path] = field(default_factory=list)
    """With ``--seeds``: every seed's run dir (``run_dir`` is the first)."""
    comparison: Path | None = None
    """With two or more seeds: the study folder's across-seed comparison.json."""

    @property
    def report_html(self) -> Path:
        """The study's report: the across-seed one in the study folder with two or more seeds."""
        return (self.out if len(self.seed_runs) > 1 else self.run_dir) / layout.REPORT_HTML

    @property
    def report_md(self) -> Path:
        return (self.out if len(self.seed_runs) > 1 else self.run_dir) / layout.REPORT_MD

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / layout.FIGURES_DIR

    @property
    def analysis(self) -> Path:
        return self.run_dir / layout.ANALYSIS


def hardware() -> dict[str, Any]:
    """What this machine is, for the report's throughput section."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(terse=True),
                            "cpu_count": os.cpu_count()}
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if cpu:
        info["cpu"] = cpu
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return info


def signature(inputs: Sequence[Path], **options: Any) -> dict:
    """What a stage's outputs depend on: its input files (name, size, mtime) and options."""
    files = {str(p): [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None for p in sorted(inputs)}
    return {"files": files, "options": {k: v for k, v in options.items()}}


def _training_finished(run_dir: Path) -> bool:
    """The run wrote its final model and its log reached max_steps."""
    if not (run_dir / layout.FINAL_MODEL_DIR).is_dir():
        return False
    try:
        cfg = load_run_config(run_dir, missing_ok=True)
    except UserError:
        return False
    if cfg is None:
        return False
    max_steps = cfg.train.optim.max_steps
    last = 0
    try:
        with open(run_dir / layout.METRICS, encoding="utf-8") as handle:
            for line in handle:
                try:
                    last = max(last, int(json.loads(line).get("step", 0)))
                except (ValueError, AttributeError):
                    continue
    except OSError:
        return False
    return last >= max_steps


def _same_training(run_dir: Path, requested: TrainConfig) -> list[str]:
    """Differences between the saved run config and the requested one (empty when the same)."""
    saved = to_dict(load_run_config(run_dir).train)
    diffs: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        elif a != b:
            diffs.append(f"{prefix}: {a!r} -> {b!r}")

    walk(saved, to_dict(requested), "")
    return diffs


def _study_out_dir(preset: str, out: str | Path | None) -> Path:
    """The study folder: ``out`` or studies/PRESET; refused when it holds something that is not a study."""
    out_dir = Path(out).expanduser() if out is not None else Path("studies") / preset
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (
            (out_dir / layout.STUDY_STATE).exists() or (out_dir / layout.STUDY_DATA_DIR).exists()
            or (out_dir / layout.STUDY_RUN_DIR).exists() or any(out_dir.glob(f"{SEED_RUN_PREFIX}*"))):
        raise UserError(f"--out {out_dir} is a non-empty folder that is not a bertcurve study; "
                        "choose a new or empty folder")
    return out_dir


def _study_inputs(preset: str, inputs: Sequence[str | Path], redo: Sequence[str]) -> list[str]:
    """The corpora to prepare, after checking the preset and ``redo``."""
    if preset not in PRESETS:
        raise UserError(f"unknown study preset {preset!r}; choose one of {', '.join(PRESETS)}")
    bad = [s for s in redo if s not in ("analyze", "plot", "report")]
    if bad:
        raise UserError(f"--redo accepts analyze, plot and report, not {', '.join(bad)} "
                        "(a finished training is never redone; choose a new --out)")
    input_list = [str(i) for i in inputs] or list(PRESETS[preset].default_inputs)
    if not input_list:
        raise UserError(f"preset {preset} needs a corpus: give one or more INPUT files or folders "
                        "(e.g. `bertcurve study corpus.txt --preset seed-100k`)")
    return input_list


def _previous_record(record_path: Path, tell: Callable[[str], None]) -> dict:
    """The study record of an earlier call ({} when none, or when it is damaged)."""
    try:
        previous = read_json(record_path, "study record") if record_path.is_file() else {}
    except UserError as exc:  # a damaged record only costs re-running the cheap stages
        tell(f"bertcurve: ignoring {record_path.name} ({exc}); stages after training will run again")
        previous = {}
    return previous if isinstance(previous, dict) else {}


@dataclass
class _StageRunner:
    """Runs the stages in order, timing each and saving the study record after each one."""

    result: StudyResult
    record_path: Path
    previous: dict
    settings: dict          # preset, train_preset, inputs and config, written into the record
    redo: Sequence[str]
    tell: Callable[[str], None]
    total: int = len(STAGES)

    def save_record(self) -> None:
        write_json(self.record_path, {
            "format": STUDY_FORMAT,
            "bertcurve_version": __version__,
            **self.settings,
            "hardware": hardware(),
            "stages": [s.__dict__ for s in self.result.stages],
            "history": (self.previous.get("history") or []) + [
                {"stage": s.name, "status": s.status, "seconds": round(s.seconds, 3)} for s in self.result.stages],
        })

    def up_to_date(self, name: str, sig: dict, outputs: Sequence[Path]) -> bool:
        """Done in an earlier call from the same inputs and options, and its outputs are still there.
        ``name`` is the stage's record name (``analyze seed 1`` with --seeds); --redo names the verb."""
        done_before = {s_["name"]: s_ for s_ in self.previous.get("stages", [])
                       if s_.get("status") in ("done", "skipped")}
        return (name.split(" ")[0] not in self.redo and done_before.get(name, {}).get("signature") == sig
                and all(p.exists() for p in outputs))

    def stage(self, name: str, fn: Callable[[], tuple[str, str]], sig: Callable[[], dict] | None = None) -> str:
        """Run one stage; return its status."""
        self.tell(f"[{len(self.result.stages) + 1}/{self.total}] {name} ...")
        started = time.perf_counter()
        status, detail = fn()
        rec = StageRecord(name, status, time.perf_counter() - started, detail, sig() if sig else {})
        self.result.stages.append(rec)
        self.save_record()
        self.tell(f"      {status}{': ' + detail if detail else ''} ({rec.seconds:.1f} s)")
        return status


def _prepare_stage(input_list: list[str], data_dir: Path, quiet: bool,
                   prepare_options: Mapping[str, Any] | None) -> tuple[str, str]:
    """prepare itself reuses a data dir built from the same inputs and options."""
    from bertcurve.stages.prepare import prepare

    meta = data_dir / layout.DATA_META
    before = meta.stat().st_mtime if meta.is_file() else None
    prepare(input_list, data_dir, progress=not quiet, **dict(prepare_options or {}))
    after = meta.stat().st_mtime if meta.is_file() else None
    m = read_json(meta, "data set metadata")
    sp = m.get("splits", {})
    detail = (f"{sp.get('train', {}).get('sentences', 0):,} train / {sp.get('val', {}).get('sentences', 0):,} "
              f"val sentences, vocabulary {m.get('vocab_size', 0):,}")
    return ("skipped" if before is not None and before == after else "done"), detail


def _train_stage(result: StudyResult, run_dir: Path, t_preset: str, config: str | Path | None,
                 train_overrides: Mapping[str, Any] | None, quiet: bool,
                 emit: Callable[[str], None]) -> tuple[str, str]:
    """resume="auto" continues an interrupted run exactly; a finished run is only checked, never redone."""
    from bertcurve.stages.train import train

    if _training_finished(run_dir):
        wanted = build_config(t_preset, config, train_overrides)
        diffs = _same_training(run_dir, wanted)
        if diffs:
            raise UserError(
                f"{run_dir} holds a finished run with other settings ({'; '.join(diffs[:4])}"
                f"{' ...' if len(diffs) > 4 else ''}); choose a new --out for a new study")
        return "skipped", "finished earlier"
    res = train(result.data_dir, run_dir, preset=t_preset, config=config, overrides=train_overrides,
                resume="auto", quiet=quiet, log=emit if not quiet else None)
    if run_dir == result.run_dir:
        result.final_eval = res.final_eval
    resumed = f"resumed from step {res.resumed_from}, " if res.resumed_from else ""
    if not res.completed:
        return "interrupted", f"{resumed}stopped at step {res.step}/{res.max_steps}"
    acc = res.final_eval.get("mlm_accuracy") if res.final_eval else None
    return "done", (f"{resumed}{res.step} steps" + (f", held-out accuracy {acc:.4f}" if acc is not None else ""))


def _run_after_training(runner: _StageRunner, lang: str, target: float | None, level: float | None,
                        run_dir: Path, suffix: str = "") -> None:
    """analyze, plot and report of ``run_dir``, each skipped when its inputs and options are unchanged;
    ``suffix`` (`` seed 1``) tells the study record which run a stage belongs to."""
    data_dir = runner.result.data_dir
    metrics = run_dir / layout.METRICS
    analysis = run_dir / layout.ANALYSIS
    fig_dir = run_dir / layout.FIGURES_DIR

    def sig_analyze() -> dict:
        return signature([metrics], target=target, level=level)

    def do_analyze() -> tuple[str, str]:
        if runner.up_to_date("analyze" + suffix, sig_analyze(), [analysis]):
            return "skipped", "up to date"
        from bertcurve.stages.analyze import analyze

        res = analyze(run_dir, target=target, **({"level": level} if level is not None else {}))
        chosen = (res.get("chosen_model") or {}).get("model")
        return "done", f"{res['metric']['name']}, forecasting model {chosen or 'none (too few points)'}"

    def sig_plot() -> dict:
        return signature([metrics, analysis], lang=lang, target=target, level=level)

    def do_plot() -> tuple[str, str]:
        if runner.up_to_date("plot" + suffix, sig_plot(), [fig_dir / "training_curves.png"]):
            return "skipped", "up to date"
        from bertcurve.stages.plot import plot

        res = plot([run_dir], out=fig_dir, lang=lang, target=target, level=level)
        return "done", f"{len(res.files)} figures" + (f"; left out: {'; '.join(res.skipped)}" if res.skipped else "")

    def sig_report() -> dict:
        return signature([metrics, analysis, *fig_dir.glob("*.png"), data_dir / layout.DATA_META],
                         lang=lang, target=target)

    def do_report() -> tuple[str, str]:
        if runner.up_to_date("report" + suffix, sig_report(), [run_dir / layout.REPORT_HTML, run_dir / layout.REPORT_MD]):
            return "skipped", "up to date"
        from bertcurve.stages.report import report

        report([run_dir], lang=lang, target=target)
        return "done", ""

    runner.stage("analyze" + suffix, do_analyze, sig_analyze)
    runner.stage("plot" + suffix, do_plot, sig_plot)
    runner.stage("report" + suffix, do_report, sig_report)


def _across_seeds(runner: _StageRunner, lang: str, target: float | None, level: float | None) -> None:
    """The study folder's comparison.json, seed_bands.png and report over every seed's run."""
    result = runner.result
    runs = result.seed_runs
    out = result.out
    comparison = out / layout.COMPARISON

    def sig() -> dict:
        return signature([r / layout.METRICS for r in runs], lang=lang, target=target, level=level,
                         runs=[r.name for r in runs])

    def do() -> tuple[str, str]:
        outputs = [comparison, out / layout.REPORT_HTML, out / layout.REPORT_MD]
        if "report" not in runner.redo and runner.up_to_date("seeds", sig(), outputs):
            return "skipped", "up to date"
        from bertcurve.stages.compare import compare
        from bertcurve.stages.report import report

        res = compare(runs, out=comparison, level=level, lang=lang)
        report(runs, out=out, lang=lang, target=target)
        g = (res.get("seed_groups") or {}).get("groups") or []
        if len(g) != 1:  # a run's settings changed between seeds (should not happen in one study)
            return "done", f"{len(g)} configurations among the seeds; see {comparison}"
        f = g[0]["final"]
        spread = f"SD {f['sd']:.4f}, SE {f['se']:.4f}" if f.get("sd") is not None else "one seed"
        return "done", f"{g[0]['metric']} {f['mean']:.4f} over {f['n']} seeds ({spread})"

    result.comparison = comparison
    runner.stage("seeds", do, sig)


def study(
    inputs: Sequence[str | Path] = (),
    *,
    preset: str = "demo",
    out: str | Path | None = None,
    config: str | Path | None = None,
    train_preset: str | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    prepare_options: Mapping[str, Any] | None = None,
    lang: str = "both",
    target: float | None = None,
    redo: Sequence[str] = (),
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
    level: float | None = None,
    seeds: Sequence[int] | None = None,
) -> StudyResult:
    """Run (or finish) a study into ``out`` (default ``studies/PRESET``); return where everything is.

    ``inputs``: corpora for ``bertcurve prepare`` (default: the preset's, i.e. the built-in
    demo corpus for ``demo``; the seed presets need one). ``config``: a training config
    JSON file applied on top of the preset. ``train_preset`` / ``train_overrides`` /
    ``prepare_options``: finer control (tests use ``train_preset="tiny"``). ``redo``:
    stages to run even when up to date (analyze, plot, report; a finished training is
    never redone: use a new ``out``). ``level``: confidence level of the analysis and the forecast
    band (default 0.95). ``seeds``: train one run per seed into ``run-seedN/`` (instead of
    ``run/`` with the config's seed) and, with two or more, aggregate them in the study folder
    (comparison.json, seed_bands.png, report.md/html). Stages already done are skipped; an
    interrupted training resumes from its newest checkpoint.
    """
    from bertcurve.viz.figures import check_lang

    check_lang(lang)
    seed_list = _check_seeds(seeds, train_overrides)
    input_list = _study_inputs(preset, inputs, redo)
    out_dir = _study_out_dir(preset, out)
    out_dir.mkdir(parents=True, exist_ok=True)
    emit = say or (lambda msg: print(msg, flush=True))
    tell = (lambda msg: None) if quiet else emit
    run_dirs = [seed_run_dir(out_dir, s) for s in seed_list] if seed_list else [out_dir / layout.STUDY_RUN_DIR]
    result = StudyResult(out_dir, out_dir / layout.STUDY_DATA_DIR, run_dirs[0],
                         seed_runs=run_dirs if seed_list else [])
    record_path = out_dir / layout.STUDY_STATE
    previous = _previous_record(record_path, tell)
    t_preset = train_preset or PRESETS[preset].train_preset
    runner = _StageRunner(result, record_path, previous,
                          {"preset": preset, "train_preset": t_preset, "inputs": input_list,
                           "config": str(config) if config else None,
                           **({"seeds": seed_list} if seed_list else {})},
                          redo, tell,
                          total=1 + 4 * len(run_dirs) + (1 if len(run_dirs) > 1 else 0))

    runner.stage("prepare", lambda: _prepare_stage(input_list, result.data_dir, quiet, prepare_options))
    for i, run_dir in enumerate(run_dirs):
        suffix = f" seed {seed_list[i]}" if seed_list else ""
        overrides = dict(train_overrides or {}, seed=seed_list[i]) if seed_list else train_overrides
        status = runner.stage("train" + suffix, lambda: _train_stage(result, run_dir, t_preset, config, overrides,
                                                                     quiet, emit))
        if status == "interrupted":
            tell(f"\ntraining was interrupted; run the same command again to resume it:\n"
                 f"  bertcurve study {' '.join(input_list) if inputs else ''}".rstrip()
                 + (f" --preset {preset}" if preset != "demo" else "") + f" --out {out_dir}"
                 + (f" --seeds {','.join(str(s) for s in seed_list)}" if seed_list else ""))
            return result
        _run_after_training(runner, lang, target, level, run_dir, suffix)
    if len(run_dirs) > 1:
        _across_seeds(runner, lang, target, level)
    result.completed = True
    if result.final_eval is None:
        result.final_eval = _last_eval(result.run_dir / layout.METRICS)
    tell(_where(result))
    return result


def _check_seeds(seeds: Sequence[int] | None, train_overrides: Mapping[str, Any] | None) -> list[int]:
    """The seeds of a multi-seed study ([] without --seeds): distinct integers >= 0."""
    if seeds is None:
        return []
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise UserError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
    if any(s < 0 for s in seed_list) or len(set(seed_list)) < len(seed_list):
        raise UserError(f"--seeds {','.join(str(s) for s in seed_list)}: give distinct seeds >= 0, e.g. 0,1,2")
    if train_overrides and "seed" in train_overrides:
        raise UserError("give the seed either in --seeds or in the training settings, not both")
    return seed_list


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] for --seeds (a range ``0-4`` is accepted too)."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out += list(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. --seeds 0,1,2") from None
    if not out:
        raise UserError(f"--seeds {text!r}: give at least one seed, e.g. --seeds 0,1,2")
    return out


def _last_eval(metrics: Path) -> dict | None:
    last = None
    try:
        with open(metrics, encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if row.get("split") == "eval":
                    last = row
    except OSError:
        return None
    return last


def _where(result: StudyResult) -> str:
    """The closing summary: what was learned and where every file is."""
    total = sum(s.seconds for s in result.stages)
    lines = ["", f"研究完成 study finished in {total / 60:.1f} min:"]
    ev = result.final_eval if len(result.seed_runs) < 2 else None  # with seeds: the across-seed line
    if ev and ev.get("mlm_accuracy") is not None:
        se = ev.get("mlm_accuracy_se")
        lines.append(f"  验证集 MLM 准确率 held-out MLM accuracy: {ev['mlm_accuracy']:.2%}"
                     + (f" ± {se:.2%}" if se else "") + f" at step {ev.get('step', '?'):,}")
    if len(result.seed_runs) > 1:
        lines += _seed_summary(result)
    lines += [
        f"  报告 report      {result.report_html}",
        f"                  {result.report_md}",
        f"  图表 figures     {result.figures_dir}/",
        f"  分析 analysis    {result.analysis}",
        f"  模型 model       {result.run_dir / layout.FINAL_MODEL_DIR}/",
        f"  日志 metrics     {result.run_dir / layout.METRICS}",
        f"  数据 data        {result.data_dir}/",
        "",
        f"  try: bertcurve fill-mask {result.run_dir} \"今天天气很[MASK]。\"",
    ]
    if len(result.seed_runs) > 1:
        lines[-2:-2] = [f"  各种子 seed runs  {', '.join(r.name for r in result.seed_runs)} (each with its own "
                        f"report, figures and analysis)", f"  对比 comparison  {result.comparison}"]
    return "\n".join(lines)


def _seed_summary(result: StudyResult) -> list[str]:
    """The across-seed line of the closing summary (from the study's comparison.json)."""
    try:
        res = read_json(result.comparison, "comparison") if result.comparison else {}
    except UserError:
        return []
    out = []
    for g in (res.get("seed_groups") or {}).get("groups") or []:
        f = g["final"]
        if f.get("sd") is None:
            continue
        out.append(f"  跨 {f['n']} 个种子 across {f['n']} seeds: {f['mean']:.2%} ± {f['sd']:.2%} (SD), "
                   f"SE {f['se']:.2%}, {f['level']:.0%} CI {f['ci_low']:.2%}–{f['ci_high']:.2%}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="corpus files or folders for `bertcurve prepare` (default for --preset demo: the "
                             "built-in demo corpus; the seed presets need one)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="demo",
                        help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()) + " (default: demo)")
    parser.add_argument("--config", type=Path, default=None,
                        help="training config file (JSON or YAML) applied on top of the preset "
                             "(see docs/run-dir.md)")
    parser.add_argument("--out", type=Path, default=None, help="study folder (default: studies/PRESET)")
    parser.add_argument("--train-preset", default=None,
                        help="use this training preset instead of the study preset's (e.g. tiny for a smoke test)")
    parser.add_argument("--lang", choices=("zh", "en", "both"), default="both",
                        help="language of figure labels and report titles (default: both)")
    parser.add_argument("--target", type=float, default=None,
                        help="metric value to forecast the step for (default: the next 5 points of accuracy)")
    parser.add_argument("--level", type=float, default=None,
                        help="confidence level of the analysis's intervals and the forecast band (default 0.95)")
    parser.add_argument("--seeds", type=parse_seeds, default=None, metavar="A,B,...",
                        help="train one run per seed (run-seedN/ in the study folder) and aggregate them: mean "
                             "curve with an across-seed band, spread of the final accuracy (default: one run, "
                             "run/, with the config's seed)")
    parser.add_argument("--redo", nargs="+", choices=("analyze", "plot", "report"), default=(),
                        help="run these stages even when they are up to date")
    parser.add_argument("--text-field", default=None, metavar="NAME",
                        help="field holding the text in .jsonl/.json inputs (passed to prepare; default: text)")
    parser.add_argument("--quiet", action="store_true", help="print only the closing summary")


def run(args: argparse.Namespace) -> int:
    result = study(args.inputs, preset=args.preset, out=args.out, config=args.config,
                   train_preset=args.train_preset, lang=args.lang, target=args.target, redo=args.redo,
                   quiet=args.quiet, level=args.level, seeds=args.seeds,
                   prepare_options={"text_field": args.text_field} if args.text_field else None)
    if args.quiet and result.completed:
        print(_where(result))
    return 0 if result.completed else 130

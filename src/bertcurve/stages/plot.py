"""Draw the learning-curve figures of one or more training logs.

SOURCE is anything ``bertcurve analyze`` reads: a run directory, a metrics.jsonl,
the seed's training_history_*.json, a Hugging Face trainer_state.json, a
TensorBoard event folder, a CSV/TSV file with a step column.

Figures (one file each): training_curves, correlation_analysis, loss_analysis,
forecast, and, for two or more sources, comparison. With one source they go
straight into --out; with several, each source gets a sub-folder and the
comparison sits at the top. Default --out: RUN_DIR/figures for a run directory,
else ./figures. Chinese labels use a CJK font (see docs/figures-and-report.md).
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import atomic_write_bytes
from bertcurve.what_if import planned_schedule

FORMATS = ("png", "svg")
SINGLE_FIGURES = ("training_curves", "correlation_analysis", "loss_analysis", "forecast")
ALL_FIGURES = SINGLE_FIGURES + ("comparison",)
DEFAULT_DPI = 150


@dataclass
class PlotResult:
    """What :func:`plot` wrote and what it left out, and why."""

    out: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # "figure for log: reason"


def default_out(sources: Sequence[str | Path]) -> Path:
    """RUN_DIR/figures when the single source is a run directory, else ./figures."""
    if len(sources) == 1:
        path = Path(sources[0]).expanduser()
        if path.is_dir() and (path / layout.METRICS).is_file():
            return path / layout.FIGURES_DIR
        if path.name == layout.METRICS:
            return path.parent / layout.FIGURES_DIR
    return Path("figures")


def _save(fig: Any, path: Path, fmt: str, dpi: int) -> None:
    """Render to memory, then write atomically: a figure file is never half-written."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Software": "bertcurve"} if fmt == "png" else None)
    atomic_write_bytes(path, buffer.getvalue())


def plot(
    sources: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    fmt: str = "png",
    lang: str = "both",
    metric: str | None = None,
    target: float | None = None,
    dpi: int = DEFAULT_DPI,
    figures: Sequence[str] | None = None,
    level: float | None = None,
    step_col: str | None = None,
    metric_col: str | None = None,
    direction: str | None = None,
) -> PlotResult:
    """Draw the figures of ``sources`` into ``out``; return the files written.

    ``metric`` picks the series for the correlation, forecast and comparison
    figures (default: held-out MLM accuracy, else the training-batch one);
    ``target`` is the forecast's target value (default: see
    :func:`bertcurve.viz.figures.default_target`); ``figures`` restricts which figures
    are drawn; ``level`` is the confidence level of the forecast band (default: that of the run's
    analysis.json, else 0.95); ``step_col``/``metric_col`` name the CSV/TSV columns. A figure a log cannot support (e.g. no loss logged) is skipped and
    listed in :attr:`PlotResult.skipped`; bad input raises UserError.
    """
    import matplotlib

    from bertcurve.viz import figures as F
    from bertcurve.curves.logs import load_log

    wanted = _wanted_figures(sources, fmt, lang, dpi, figures, target, level)

    from bertcurve.layout import resolve_runs

    sources = resolve_runs(sources)
    logs = [load_log(s, step_col=step_col, metric_col=metric_col) for s in sources]
    out_dir = Path(out).expanduser() if out is not None else default_out(sources)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder to draw the figures into")
    result = PlotResult(out=out_dir)
    names = F.unique_names(logs)
    several = len(logs) > 1

    with matplotlib.rc_context(F.style()):
        for log, name in zip(logs, names):
            folder = out_dir / _safe_name(name) if several else out_dir
            folder.mkdir(parents=True, exist_ok=True)
            _draw_log_figures(result, log, name, folder, wanted, fmt=fmt, dpi=dpi, lang=lang, metric=metric,
                              target=target, level=level, direction=direction)
        if several and "comparison" in wanted:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"comparison.{fmt}"
            _save(F.comparison(logs, lang=lang, metric=metric), path, fmt, dpi)
            result.files.append(path)
    if not result.files:
        raise UserError("no figure could be drawn: " + "; ".join(result.skipped))
    return result


def _wanted_figures(sources: Sequence[Any], fmt: str, lang: str, dpi: int, figures: Sequence[str] | None,
                    target: float | None, level: float | None) -> tuple[str, ...]:
    """Check plot's options; return the figures to draw."""
    from bertcurve.viz import figures as F

    if not sources:
        raise UserError("give at least one log to plot (a run directory, metrics.jsonl, history JSON, ...)")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    F.check_lang(lang)
    if not 30 <= int(dpi) <= 600:
        raise UserError(f"--dpi {dpi} is out of range; use 30..600 (150 is the default)")
    wanted = tuple(figures) if figures else ALL_FIGURES
    unknown = [f for f in wanted if f not in ALL_FIGURES]
    if unknown:
        raise UserError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(ALL_FIGURES)}")
    if target is not None and not (target == target):  # NaN
        raise UserError("--target must be a number")
    if level is not None:
        from bertcurve.curves.policy import check_level

        check_level(level)
    return wanted


def _draw_log_figures(result: PlotResult, log: Any, name: str, folder: Path, wanted: Sequence[str], *, fmt: str,
                      dpi: int, lang: str, metric: str | None, target: float | None, level: float | None,
                      direction: str | None) -> None:
    """Draw one log's single-log figures into ``folder``; add them (or why not) to ``result``."""
    from bertcurve.viz import figures as F

    cache: dict[str, Any] = {}

    def fits() -> Any:
        # Fitting costs seconds: only when a figure needs it, once per log.
        if "fits" not in cache:
            try:
                cache["fits"] = F.LogFits.compute(log, metric, with_loss="loss_analysis" in wanted,
                                                  analysis=_saved_analysis(log), level=level,
                                                  direction=direction, schedule=planned_schedule(log))
            except UserError as exc:
                cache["fits"] = exc
        if isinstance(cache["fits"], UserError):
            raise cache["fits"]
        return cache["fits"]

    builders: dict[str, Callable[[], Any]] = {
        "training_curves": lambda: F.training_curves(log, lang=lang),
        "correlation_analysis": lambda: F.correlation_analysis(log, lang=lang, metric=fits().metric,
                                                               fit=fits().best, level=fits().level),
        "loss_analysis": lambda: F.loss_analysis(log, lang=lang, fit=_loss_fit(fits)),
        "forecast": lambda: F.forecast(log, lang=lang, metric=fits().metric, fit=fits().forecast,
                                       target=target, level=fits().level,
                                       what_if=(_saved_analysis(log) or {}).get("what_if")),
    }
    for figure in SINGLE_FIGURES:
        if figure not in wanted:
            continue
        try:
            fig = builders[figure]()
        except UserError as exc:
            result.skipped.append(f"{figure} for {name}: {exc}")
            continue
        path = folder / f"{figure}.{fmt}"
        _save(fig, path, fmt, dpi)
        result.files.append(path)


def _saved_analysis(log: Any) -> dict | None:
    """RUN_DIR/analysis.json when it is at least as new as the log it analysed, else None."""
    from bertcurve.fsutil import read_json

    if log.kind != "bertcurve-run" or log.path.name != layout.METRICS:
        return None
    path = log.path.parent / layout.ANALYSIS
    try:
        if path.stat().st_mtime < log.path.stat().st_mtime:
            return None
        data = read_json(path, "analysis")
    except (OSError, UserError):
        return None
    return data if isinstance(data, dict) and data.get("format") == layout.ANALYSIS_FORMAT else None


def _loss_fit(fits: Callable[[], Any]) -> Any:
    """The loss fit, or None when the metric itself cannot be fitted (the loss figure still draws)."""
    try:
        return fits().loss
    except UserError:
        return None


def _safe_name(name: str) -> str:
    """A folder name from a log's display name (no path separators)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.()" else "_" for ch in name).strip("._")
    return cleaned or "log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="run directory, metrics.jsonl, seed history JSON, trainer_state.json, "
                             "TensorBoard folder or CSV/TSV (two or more add a comparison figure)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the figures (default: RUN_DIR/figures for one run dir, else ./figures)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="png",
                        help="file format (default: png)")
    parser.add_argument("--lang", choices=("zh", "en", "both"), default="both",
                        help="label language: Chinese, English or both side by side (default: both)")
    parser.add_argument("--metric", default=None,
                        help="metric to analyse, e.g. eval_mlm_accuracy (default: held-out MLM accuracy, "
                             "else the training-batch one)")
    parser.add_argument("--target", type=float, default=None,
                        help="target value for the forecast figure, e.g. 0.6 (default: halfway from the last "
                             "value to the fitted ceiling)")
    parser.add_argument("--level", type=float, default=None,
                        help="confidence level of the forecast band (default: that of the run's analysis.json, "
                             "else 0.95)")
    from bertcurve.stages.analyze import add_column_arguments

    add_column_arguments(parser)
    parser.add_argument("--direction", choices=("up", "down"), default=None,
                        help="whether the metric should grow or fall (default: from its name, else the data)")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI, help=f"PNG resolution (default: {DEFAULT_DPI})")
    parser.add_argument("--only", nargs="+", choices=ALL_FIGURES, default=None, metavar="FIGURE",
                        help=f"draw only these figures ({', '.join(ALL_FIGURES)})")


def run(args: argparse.Namespace) -> int:
    result = plot(args.sources, out=args.out, fmt=args.fmt, lang=args.lang, metric=args.metric,
                  target=args.target, dpi=args.dpi, figures=args.only, level=args.level,
                  step_col=args.step_col, metric_col=args.metric_col, direction=args.direction)
    for path in result.files:
        print(path)
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    return 0

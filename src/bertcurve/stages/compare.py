"""Compare the headline figures of several runs or logs, and say where they are not like for like.

Each source is analysed as `bertcurve analyze` would (nothing is written next to
it); the table shows Pearson r, R², mean and max of the metric, final loss,
final held-out accuracy and the forecast at a common step, with differences
against the first source, like the seed's 50K-vs-100K table. Because r and the
mean depend on the window they are computed over, the same figures are also
given over the window every run covers.

Runs whose settings differ only in the seed (``train --seed``, ``study --seeds``) are
grouped automatically and aggregated: the mean curve with its across-seed band, the
spread of the final value (mean, SD, SE, t interval) and each group's difference from
the first group judged against that spread (``seed_groups`` in comparison.json,
``seed_bands.png`` next to it). Groups are named by the settings that differ.

examples:
  bertcurve compare runs/50k runs/100k
  bertcurve compare studies/cosine/run-seed* studies/wsd/run-seed*
  bertcurve compare runs/demo tests/fixtures/seed/training_history_100k.json --at-step 200000
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertcurve import __version__, layout
from bertcurve.curves import seeds as seedstats
from bertcurve.curves import stats as st
from bertcurve.stages.analyze import MIN_POINTS, add_column_arguments, analyze, choose_metric
from bertcurve.errors import UserError
from bertcurve.fsutil import write_result_json
from bertcurve.curves.logs import load_log
from bertcurve.training.config import RunConfig, run_config_in, to_dict
from bertcurve.training.schedule import stable_phase_end
from bertcurve.training.trackers import flatten

# (key, label, format) of the headline rows, in table order.
ROWS: list[tuple[str, str, str]] = [
    ("pearson_r", "Pearson r", ".4f"),
    ("r_squared", "R²", ".4f"),
    ("r_ci_low", "r CI low (dependence-aware)", ".3f"),
    ("r_ci_high", "r CI high (dependence-aware)", ".3f"),
    ("effective_n", "有效样本量 effective n", ".0f"),
    ("mean", "均值 mean", ".4f"),
    ("max", "最大 max", ".4f"),
    ("final_mean", "末10%均值 mean of last 10 %", ".4f"),
    ("final_loss", "最终损失 final loss", ".4f"),
    ("final_eval_accuracy", "最终验证准确率 final eval acc", ".4f"),
    ("forecast", "预测 forecast @ common step", ".4f"),
    ("window_pearson_r", "r over the common window", ".4f"),
    ("window_mean", "mean over the common window", ".4f"),
]


def _row(res: dict, common_step: float, window_end: float, log_values: tuple[np.ndarray, np.ndarray]) -> dict:
    dep = res["dependence"]
    boot = dep.get("block_bootstrap")
    ci = [boot["ci_low"], boot["ci_high"]] if boot else dep["adjusted_fisher_ci"]
    head = res["headline"]
    loss_key = "final_eval_loss" if res["metric"]["name"].startswith("eval_") and "final_eval_loss" in head \
        else ("final_train_loss" if "final_train_loss" in head else "final_eval_loss")
    fc = next((f for f in res["forecasts"] if f["step"] == common_step), None)
    steps, values = log_values
    in_window = steps <= window_end
    window_r = None
    if in_window.sum() >= 3 and np.ptp(values[in_window]) > 0:
        window_r = st.pearson(steps[in_window], values[in_window]).statistic
    return {
        "name": res["source"]["name"],
        "path": res["source"]["path"],
        "kind": res["source"]["kind"],
        "metric": res["metric"]["name"],
        "n": res["metric"]["n"],
        "first_step": res["metric"]["first_step"],
        "last_step": res["metric"]["last_step"],
        "pearson_r": res["correlation"]["pearson"]["statistic"],
        "r_squared": res["correlation"]["pearson"]["statistic"] ** 2,
        "r_ci_low": ci[0],
        "r_ci_high": ci[1],
        "effective_n": dep["effective_sample_size"],
        "mean": res["descriptive"]["mean"],
        "max": res["descriptive"]["max"],
        "final_mean": head["mean_last_10pct"],
        "final_loss": head.get(loss_key),
        "final_loss_metric": loss_key.removeprefix("final_") if head.get(loss_key) is not None else None,
        "final_eval_accuracy": head.get("final_eval_mlm_accuracy"),
        "forecast": None if fc is None else fc.get("value"),
        "forecast_pi": None if fc is None else fc.get("pi"),
        "forecast_model": None if fc is None else fc.get("model"),
        "forecast_is_extrapolation": bool(fc and fc["extrapolation"]),
        "window_pearson_r": window_r,
        "window_mean": float(np.mean(values[in_window])) if in_window.any() else None,
        "chosen_model": res["chosen_model"]["model"],
        "verdict": res["verdict"][:2],
    }


def _differences(rows: list[dict]) -> list[dict]:
    base = rows[0]
    out = []
    for r in rows[1:]:
        d: dict[str, Any] = {"name": r["name"], "against": base["name"]}
        for key, _, _ in ROWS:
            a, b = base.get(key), r.get(key)
            if a is None or b is None:
                d[key] = None
                continue
            d[key] = {"difference": b - a, "percent": (b - a) / abs(a) * 100 if a else None}
        out.append(d)
    return out


def _config(log_meta: dict) -> RunConfig | None:
    return run_config_in(log_meta)


def _like_for_like_notes(rows: list[dict], metas: list[dict], window_end: float, common_step: float) -> list[str]:
    notes = []
    metrics = {r["metric"] for r in rows}
    if len(metrics) > 1:
        notes.append(f"different metrics are compared ({', '.join(sorted(metrics))}): a training-batch accuracy "
                     f"and a held-out accuracy measure different things")
    if any(r["metric"] == "train_mlm_accuracy" for r in rows):
        notes.append("train_mlm_accuracy is the accuracy of one training batch per log line (the seed's measure): "
                     "noisy and not held-out")
    windows = {(r["first_step"], r["last_step"]) for r in rows}
    if len(windows) > 1:
        spans = ", ".join(f"{r['name']} {r['first_step']:,}–{r['last_step']:,}" for r in rows)
        notes.append(f"different step windows ({spans}): Pearson r, R² and the mean depend on the window they "
                     f"are computed over (on a saturating curve r falls as the flat tail grows); compare the "
                     f"'common window' rows "
                     f"(steps ≤ {window_end:,.0f}) instead")
    kinds = {r["kind"] for r in rows}
    if len(kinds) > 1:
        notes.append(f"logs of different kinds ({', '.join(sorted(kinds))}): logging cadence and metric "
                     f"definitions may differ")
    configs = [(r, _config(meta)) for r, meta in zip(rows, metas)]
    configs = [(r, cfg) for r, cfg in configs if cfg is not None]
    fingerprints = {r["name"]: cfg.eval_set.fingerprint for r, cfg in configs if cfg.eval_set.fingerprint}
    if len(set(fingerprints.values())) > 1:
        notes.append("the runs were evaluated on different held-out sets (eval-set fingerprints differ): "
                     "final eval accuracies are not directly comparable")
    tok = {r["name"]: cfg.tokenizer_sha256 for r, cfg in configs if cfg.tokenizer_sha256}
    if len(set(tok.values())) > 1:
        notes.append("the runs use different tokenizers/vocabularies: losses and accuracies are not on one scale")
    max_steps = {r["name"]: cfg.train.optim.max_steps for r, cfg in configs}
    if len(set(max_steps.values())) > 1:
        notes.append("the learning-rate schedules have different lengths (max_steps " +
                     ", ".join(f"{k} {v:,}" for k, v in max_steps.items()) +
                     "): at a given step the runs are at different points of their schedules")
    extrap = [r["name"] for r in rows if r["forecast_is_extrapolation"]]
    if extrap:
        notes.append(f"the forecast at step {common_step:,.0f} is an extrapolation for {', '.join(extrap)}")
    return notes


def compare(
    sources: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    metric: str | None = None,
    at_step: float | None = None,
    bootstrap: int = 300,
    seed: int = 0,
    write: bool = True,
    step_col: str | None = None,
    metric_col: str | None = None,
    level: float | None = None,
    direction: str | None = None,
    seed_figure: str | Path | None = None,
    lang: str = "both",
) -> dict:
    """Compare the headline figures of several logs and write comparison.json.

    ``step_col``/``metric_col``: CSV/TSV columns, as for ``analyze``; ``level``: confidence level
    of the intervals; ``direction``: "up"/"down" when the metric's name does not say.
    ``metric``: the metric for every source (default: each log's default metric).
    ``at_step``: the common step for forecasts (default: the largest last step).
    ``out``: where to write (default ./comparison.json). Returns the comparison dict.
    Runs that differ only in seed are aggregated (``seed_groups``); their figure goes to
    ``seed_figure`` (default ``seed_bands.png`` beside comparison.json; drawn without ``write``
    only when given), labelled in ``lang``.
    """
    sources = layout.resolve_runs(sources)   # a study with --seeds stands for its seed runs
    if len(sources) < 2:
        raise UserError("compare needs at least two sources (runs or logs)")
    from bertcurve.curves import policy

    level = policy.check_level(policy.DEFAULT_LEVEL if level is None else level)
    logs = [load_log(s, step_col=step_col, metric_col=metric_col) for s in sources]
    results_steps = []
    for log in logs:
        s = log.metric(choose_metric(log, metric), min_points=MIN_POINTS, allow_constant=False)
        results_steps.append((s.steps.astype(np.float64), s.values))
    last_steps = [float(s[0][-1]) for s in results_steps]
    common = float(at_step) if at_step is not None else max(last_steps)
    if not (common > 0 and math.isfinite(common)):
        raise UserError("--at-step must be a positive number")
    window_end = min(last_steps)
    results = [analyze(src, metric=metric, forecast=[common], bootstrap=bootstrap, seed=seed, write=False,
                       step_col=step_col, metric_col=metric_col, level=level, direction=direction)
               for src in sources]
    rows = [_row(res, common, window_end, sv) for res, sv in zip(results, results_steps)]
    seen: dict[str, int] = {}
    for r in rows:  # two runs both called "run" stay distinguishable
        seen[r["name"]] = seen.get(r["name"], 0) + 1
        if seen[r["name"]] > 1:
            r["name"] = f"{r['name']}#{seen[r['name']]}"
    result = {
        "format": layout.COMPARISON_FORMAT,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bertcurve_version": __version__,
        "common_step": common,
        "common_window_end": window_end,
        "rows": rows,
        "differences": _differences(rows),
        "notes": _like_for_like_notes(rows, [log.meta for log in logs], window_end, common),
    }
    curve = cooldown_curve(logs, [r["name"] for r in rows], metric)
    if curve is not None:
        result["cooldown_curve"] = curve
    seeds = seed_groups(logs, rows, results_steps, level)
    seed_curves = None
    if seeds is not None:
        seed_curves = [g.pop("curves") for g in seeds["groups"]]  # for the figure; too long for the JSON
        result["seed_groups"] = seeds
        result["notes"] += seeds.pop("notes")
    from bertcurve.stages.analyze import _clean

    result = _clean(result)
    if write:
        path = Path(out).expanduser() if out is not None else Path.cwd() / layout.COMPARISON
        if path.is_dir():
            path = path / layout.COMPARISON
        write_result_json(path, result, inputs=sources)
        if curve is not None:
            result["cooldown_figure"] = str(_draw_cooldown_curve(curve, logs, path.parent))
        if seeds is not None and seed_figure is None:
            seed_figure = path.parent / SEED_FIGURE
    if seeds is not None and seed_figure is not None:
        result["seed_figure"] = str(draw_seed_bands(result["seed_groups"], seed_curves, Path(seed_figure),
                                                    lang=lang))
    return result


# ------------------------------------------------------------------ runs that differ only in seed
SEED_FIGURE = "seed_bands.png"

# Settings that decide when a run logs, evaluates and keeps checkpoints, not what it learns:
# runs that differ only in these (and the seed) are seeds of one configuration.
_NOT_THE_CONFIGURATION = {"seed", "eval.eval_every", "eval.log_every", "eval.save_every", "eval.save_at",
                          "eval.keep"}


def settings_minus_seed(cfg: RunConfig) -> dict[str, Any]:
    """A run's configuration as flat dotted settings, without the seed and the logging and
    checkpoint cadences, plus what says which data it saw (tokenizer and held-out set)."""
    flat = {k: v for k, v in flatten(to_dict(cfg.train)).items() if k not in _NOT_THE_CONFIGURATION}
    flat["tokenizer_sha256"] = cfg.tokenizer_sha256
    flat["eval_set.fingerprint"] = cfg.eval_set.fingerprint
    return flat


_SEED_SUFFIX = re.compile(r"[-_.]?seed[-_]?\d+$", re.IGNORECASE)


def _setting_text(key: str, value: Any) -> str:
    short = key.rsplit(".", 1)[-1]
    if key in ("tokenizer_sha256", "eval_set.fingerprint") and isinstance(value, str):
        return f"{'tokenizer' if key == 'tokenizer_sha256' else 'eval set'} {value[:8]}"
    if isinstance(value, float):
        return f"{short}={value:g}"
    return f"{short}={value}"


def group_by_seed(configs: Sequence[RunConfig | None], names: Sequence[str],
                  metrics: Sequence[str]) -> list[dict]:
    """Runs grouped by their settings minus the seed (and by metric); a log without a bertcurve run
    config is a group of its own. Each group: ``name`` (the settings that differ between the
    groups, e.g. ``schedule=wsd``, else the run names without their seed suffix), ``members``
    (indexes into ``names``), ``seeds`` and ``settings`` (those that differ)."""
    groups: list[dict] = []
    by_key: dict[str, dict] = {}
    for i, (cfg, name, metric) in enumerate(zip(configs, names, metrics)):
        if cfg is None:
            groups.append({"members": [i], "seeds": [None], "flat": None})
            continue
        flat = settings_minus_seed(cfg)
        key = repr((metric, sorted(flat.items(), key=lambda kv: kv[0])))
        if key not in by_key:
            by_key[key] = {"members": [], "seeds": [], "flat": flat}
            groups.append(by_key[key])
        by_key[key]["members"].append(i)
        by_key[key]["seeds"].append(cfg.train.seed)
    flats = [g["flat"] for g in groups if g["flat"] is not None]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    used: dict[str, int] = {}
    for g in groups:
        differs = {k: g["flat"].get(k) for k in differing} if g["flat"] is not None else {}
        parts = [_setting_text(k, v) for k, v in differs.items()]
        name = ", ".join(parts[:3]) + (", ..." if len(parts) > 3 else "")
        if not name:
            stems = {_SEED_SUFFIX.sub("", names[i]) or names[i] for i in g["members"]}
            name = stems.pop() if len(stems) == 1 else names[g["members"][0]]
        used[name] = used.get(name, 0) + 1
        g["name"] = name if used[name] == 1 else f"{name}#{used[name]}"
        g["settings"] = differs
        del g["flat"]
    return groups


def seed_groups(logs: Sequence, rows: Sequence[dict], curves: Sequence[tuple[np.ndarray, np.ndarray]],
                level: float) -> dict | None:
    """The across-seed aggregation of ``compare`` (None unless some configuration has two or more
    seeds): per group the mean curve and its band, the spread of the final value, and each group's
    difference from the first group against that spread."""
    configs = [run_config_in(log.meta) for log in logs]
    groups = group_by_seed(configs, [r["name"] for r in rows], [r["metric"] for r in rows])
    if not any(len(g["members"]) > 1 for g in groups):
        return None
    notes = []
    out_groups, spreads = [], []
    for g in groups:
        members = g["members"]
        finals = [float(curves[i][1][-1]) for i in members]
        last_steps = sorted({int(curves[i][0][-1]) for i in members})
        if len(last_steps) > 1:
            notes.append(f"the seeds of {g['name']} end at different steps ({', '.join(f'{s:,}' for s in last_steps)}): "
                         f"the spread of their final values mixes seed noise with training length")
        seeds = [s for s in g["seeds"] if s is not None]
        if len(set(seeds)) < len(seeds):
            notes.append(f"{g['name']}: the same seed appears more than once (seeds "
                         f"{', '.join(str(s) for s in seeds)}); is one run given twice?")
        try:
            band = seedstats.band([curves[i] for i in members], level)
        except ValueError:  # the seeds share no steps: only the final values are aggregated
            band = None
            notes.append(f"the seeds of {g['name']} share no range of steps: no mean curve")
        spreads.append(seedstats.spread(finals, level))
        out_groups.append({
            "name": g["name"], "runs": [rows[i]["name"] for i in members], "seeds": g["seeds"],
            "settings": g["settings"], "metric": rows[members[0]]["metric"], "last_steps": last_steps,
            "final": spreads[-1].to_dict(),
            "band": band.to_dict() if band is not None else None,
            "curves": [[curves[i][0].tolist(), curves[i][1].tolist()] for i in members],
        })
    base = out_groups[0]
    differences = []
    for g, sp in zip(out_groups[1:], spreads[1:]):
        if g["metric"] != base["metric"]:
            continue
        d = seedstats.difference(spreads[0], sp)
        differences.append({"name": g["name"], "against": base["name"], **d.to_dict(),
                            "text": seedstats.describe_difference(base["name"], g["name"], d)})
    return {"level": level, "groups": out_groups, "differences": differences, "notes": notes}


def draw_seed_bands(seeds: dict, curves: Sequence[Sequence], path: Path, lang: str = "both") -> Path:
    """``seed_bands.png``: every group's mean curve and band (``curves``: each group's seeds as
    ``[steps, values]``), and the final values of its seeds."""
    import io

    import matplotlib

    from bertcurve.fsutil import atomic_write_bytes, guard_output_file
    from bertcurve.viz import figures as F

    groups = [dict(g, curves=c, band=g["band"] or {"steps": [], "mean": [], "low": [], "high": [], "n": 1,
                                                   "level": seeds["level"]})
              for g, c in zip(seeds["groups"], curves)]
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with matplotlib.rc_context(F.style()):  # the CJK font
        fig = F.seed_bands(groups, seeds["groups"][0]["metric"], lang=lang)
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": "bertcurve"})
    path = guard_output_file(path, what="seed bands figure",
                             replaceable=lambda p: p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def seed_lines(seeds: dict) -> list[str]:
    """The across-seed section of the text table (also used by the report)."""
    lines = []
    for g in seeds["groups"]:
        f = g["final"]
        seeds_text = ",".join("?" if s is None else str(s) for s in g["seeds"])
        if f["sd"] is None:
            spread = f"{f['mean']:.4f} (one seed)"
        else:
            spread = (f"{f['mean']:.4f}  SD {f['sd']:.4f}  SE {f['se']:.4f}  "
                      f"{f['level']:.0%} CI {f['ci_low']:.4f}–{f['ci_high']:.4f}")
        lines.append(f"{g['name']}: {f['n']} seed{'s' if f['n'] > 1 else ''} ({seeds_text}) {spread}")
    return lines


def _is_wsd_run(log) -> bool:
    cfg = run_config_in(log.meta)
    return cfg is not None and cfg.train.optim.schedule == "wsd"


def cooldown_curve(logs: Sequence, names: Sequence[str], metric: str | None) -> dict | None:
    """The final held-out metric of each WSD run (e.g. ``RUN-cooldown-400/``...) against its last
    step — the compute curve of one run's cooldown branches; None unless finished WSD runs with a
    held-out metric end at two or more different steps."""
    wanted = metric or "eval_mlm_accuracy"
    if not wanted.startswith("eval_"):
        return None
    points = []
    for log, name in zip(logs, names):
        if not _is_wsd_run(log) or wanted not in log.series:
            continue
        cfg = run_config_in(log.meta)
        s = log.series[wanted]
        if int(s.steps[-1]) != cfg.train.optim.max_steps:
            continue  # unfinished: its last value is not a cooled-down model
        se = log.series.get(f"{wanted}_se")
        points.append({"name": name, "step": int(s.steps[-1]), "value": float(s.values[-1]),
                       "se": float(se.values[-1]) if se is not None and int(se.steps[-1]) == int(s.steps[-1])
                       else None})
    if len({p["step"] for p in points}) < 2:
        return None  # seeds of one WSD run end at one step: no curve over compute
    return {"metric": wanted, "points": sorted(points, key=lambda p: p["step"])}


def _draw_cooldown_curve(curve: dict, logs: Sequence, folder: Path) -> Path:
    """``cooldown_curve.png`` next to comparison.json; the context line is the longest WSD run."""
    from bertcurve.fsutil import atomic_write_bytes
    import io

    from bertcurve.viz import figures as F

    wsd = [log for log in logs if _is_wsd_run(log) and curve["metric"] in log.series]
    context = max(wsd, key=lambda log: float(log.series[curve["metric"]].steps[-1])) if wsd else None
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context(F.style()):  # the CJK font
        until = float("inf")
        if context is not None:
            o = run_config_in(context.meta).train.optim
            until = stable_phase_end(o.schedule, o.max_steps, o.warmup_steps, o.decay_fraction)
        fig = F.compute_curve(curve["points"], context, curve["metric"], context_until=until)
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": "bertcurve"})
    from bertcurve.fsutil import guard_output_file

    path = guard_output_file(folder / "cooldown_curve.png", what="cooldown curve figure",
                             replaceable=lambda p: p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "—"
    return format(v, fmt)


def table_text(res: dict) -> str:
    """The comparison as a text table with Δ columns against the first source."""
    rows = res["rows"]
    names = [r["name"] for r in rows]
    # wide enough for a Δ cell like "+0.0651 (+15.5%)" and the metric's name, so columns never run together
    width = max(16, *(len(n) for n in names), *(len(str(r["metric"])) for r in rows))
    label_w = 32
    head = f"{'':<{label_w}}" + "".join(f"{n:>{width + 2}}" for n in names)
    head += "".join(f"{'Δ ' + n[:width - 2]:>{width + 2}}" for n in names[1:])
    lines = [head]
    lines.append(f"{'指标 metric':<{label_w}}" + "".join(f"{r['metric']:>{width + 2}}" for r in rows))
    lines.append(f"{'步数 steps':<{label_w}}" + "".join(f"{r['first_step']:,}–{r['last_step']:,}".rjust(width + 2)
                                                      for r in rows))
    for key, label, fmt in ROWS:
        if all(r.get(key) is None for r in rows):
            continue
        label_full = label if key != "forecast" else f"预测 forecast @ {res['common_step']:,.0f}"
        if key.startswith("window_"):
            label_full = f"{label.split(' over')[0]} (steps ≤ {res['common_window_end']:,.0f})"
        line = f"{label_full:<{label_w}}" + "".join(f"{_fmt(r.get(key), fmt):>{width + 2}}" for r in rows)
        for d in res["differences"]:
            cell = d.get(key)
            if cell is None:
                line += f"{'—':>{width + 2}}"
            else:
                pct = f" ({cell['percent']:+.1f}%)" if cell["percent"] is not None else ""
                line += f"{format(cell['difference'], '+' + fmt) + pct:>{width + 2}}"
        lines.append(line)
    if res["notes"]:
        lines.append("")
        lines.append("注意 not like for like:")
        lines += [f"  - {n}" for n in res["notes"]]
    if res.get("cooldown_curve"):
        c = res["cooldown_curve"]
        lines.append("")
        lines.append(f"退火分支 cooldown branches ({c['metric']} at each run's end):")
        for p in c["points"]:
            se = f" ± {p['se']:.4f}" if p.get("se") is not None else ""
            lines.append(f"  step {p['step']:>10,}  {p['value']:.4f}{se}  {p['name']}")
        if res.get("cooldown_figure"):
            lines.append(f"  figure: {res['cooldown_figure']}")
    if res.get("seed_groups"):
        sg = res["seed_groups"]
        lines.append("")
        lines.append(f"多种子 across seeds ({sg['groups'][0]['metric']} at each run's end; mean, SD, SE, "
                     f"{sg['level']:.0%} t interval of the mean):")
        lines += [f"  {line}" for line in seed_lines(sg)]
        lines += [f"  {d['text']}" for d in sg["differences"]]
        if res.get("seed_figure"):
            lines.append(f"  figure: {res['seed_figure']}")
    if res.get("path"):
        lines.append(f"\nwrote {res['path']}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+",
                        help="two or more run directories or logs (metrics.jsonl, seed history, trainer_state.json, "
                             "TensorBoard folder, CSV); the first is the baseline of the differences")
    parser.add_argument("--metric", default=None,
                        help="metric to compare (default: each log's eval_mlm_accuracy, else train_mlm_accuracy)")
    parser.add_argument("--at-step", type=float, default=None,
                        help="common step for the forecast row (default: the largest last step)")
    parser.add_argument("--out", default=None, help="where to write comparison.json (default ./comparison.json)")
    parser.add_argument("--bootstrap", type=int, default=300,
                        help="block-bootstrap resamples for each run's interval of r (0 = effective-n Fisher only)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    parser.add_argument("--level", type=float, default=None, help="confidence level of intervals (default 0.95)")
    parser.add_argument("--direction", choices=("up", "down"), default=None,
                        help="whether the metric should grow or fall (default: from its name, else the data)")
    parser.add_argument("--lang", choices=("zh", "en", "both"), default="both",
                        help="language of the figures' labels (default: both)")
    add_column_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print comparison.json instead of the table")


def run(args: argparse.Namespace) -> int:
    res = compare(args.sources, out=args.out, metric=args.metric, at_step=args.at_step, lang=args.lang,
                  bootstrap=args.bootstrap, seed=args.seed, step_col=args.step_col, metric_col=args.metric_col,
                  level=args.level, direction=args.direction)
    if args.json:
        import json

        print(json.dumps(res, ensure_ascii=False, indent=2))
    else:
        print(table_text(res))
    return 0

"""Figures of a hyperparameter sweep: every trial's curve, parallel coordinates, importances."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import matplotlib
from matplotlib import cm, colors
from matplotlib.figure import Figure

from bertcurve.viz.figures import _steps_axis, label, metric_label, new_figure

PRUNED_COLOR = "#999999"
BEST_COLOR = "#D55E00"


def trial_curves(curves: Mapping[int, tuple[np.ndarray, np.ndarray]], states: Mapping[int, str],
                 best: int | None, metric: str, *, lang: str = "both") -> Figure:
    """The held-out metric of every trial against steps; pruned trials grey, ending in x where
    they were stopped; the best trial highlighted."""
    fig, axes = new_figure(9, 5)
    ax = axes[0][0]
    max_step = 1.0
    for number, (steps, values) in sorted(curves.items()):
        if len(steps) == 0:
            continue
        max_step = max(max_step, float(steps[-1]))
        state = states.get(number, "")
        if number == best:
            ax.plot(steps, values, color=BEST_COLOR, lw=2.2, zorder=5,
                    label=label(f"best: trial {number}", f"最佳：试验 {number}", lang))
        elif state == "pruned":
            ax.plot(steps, values, color=PRUNED_COLOR, lw=0.9, alpha=0.8)
            ax.plot(steps[-1:], values[-1:], "x", color=PRUNED_COLOR, ms=7)
        else:
            ax.plot(steps, values, lw=1.1, alpha=0.85)
    ax.plot([], [], "x-", color=PRUNED_COLOR, label=label("pruned (x: stopped)", "已剪枝（x：停止处）", lang))
    _steps_axis(ax, max_step, lang)
    ax.set_ylabel(metric_label(metric, lang))
    ax.set_title(label("Held-out curve of every trial", "每个试验的验证集曲线", lang))
    ax.legend(loc="best")
    return fig


def parallel_coordinates(params: Sequence[str], rows: Sequence[Mapping[str, Any]], values: Sequence[float],
                         log_params: set[str], objective: str, *, lang: str = "both") -> Figure:
    """One vertical axis per parameter (log-scaled where the search was), one line per finished
    trial coloured by its final metric."""
    fig, axes = new_figure(max(6, 1.8 * len(params) + 2), 4.6)
    ax = axes[0][0]
    scaled = np.zeros((len(rows), len(params)))
    ticks: list[tuple[float, float]] = []
    for j, name in enumerate(params):
        raw = [r.get(name) for r in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)
        if numeric:
            x = np.array(raw, dtype=float)
            if name in log_params:
                x = np.log10(x)
            lo, hi = float(np.min(x)), float(np.max(x))
            ticks.append((lo, hi))
            scaled[:, j] = 0.5 if hi == lo else (x - lo) / (hi - lo)
        else:
            cats = sorted({str(v) for v in raw})
            ticks.append((math.nan, math.nan))
            scaled[:, j] = [cats.index(str(v)) / max(len(cats) - 1, 1) for v in raw]
    norm = colors.Normalize(vmin=min(values), vmax=max(values)) if values else None
    cmap = matplotlib.colormaps["viridis"]
    for i, row in enumerate(scaled):
        ax.plot(range(len(params)), row, color=cmap(norm(values[i])) if norm else "C0", lw=1.4, alpha=0.85)
    ax.set_xticks(range(len(params)))
    ax.set_xticklabels([p + (" (log)" if p in log_params else "") for p in params])
    ax.set_yticks([])
    for j, (lo, hi) in enumerate(ticks):
        ax.axvline(j, color="#cccccc", lw=0.8, zorder=0)
        if math.isfinite(lo):
            fmt = (lambda v: f"{10 ** v:.3g}") if params[j] in log_params else (lambda v: f"{v:.3g}")
            ax.annotate(fmt(lo), (j, 0), textcoords="offset points", xytext=(3, -12), fontsize=8)
            ax.annotate(fmt(hi), (j, 1), textcoords="offset points", xytext=(3, 4), fontsize=8)
    if norm:
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=objective)
    ax.set_title(label("Parameters of the finished trials", "已完成试验的参数", lang))
    return fig


def importances(scores: Mapping[str, float], *, lang: str = "both") -> Figure:
    """Optuna's parameter importances (its default evaluator) as horizontal bars."""
    fig, axes = new_figure(7, 0.5 * len(scores) + 1.6)
    ax = axes[0][0]
    names = list(scores)[::-1]
    ax.barh(names, [scores[n] for n in names], color="#0072B2")
    ax.set_xlabel(label("Importance (share of explained variance)", "重要性（解释方差占比）", lang))
    ax.set_title(label("Which settings mattered", "哪些设置影响最大", lang))
    return fig

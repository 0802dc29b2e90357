"""The learning-curve figures, each a pure function ``TrainingLog -> matplotlib Figure``.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot),
so drawing never needs a display and never leaks global figure state. Labels
come in English, Chinese or both (``lang``); Chinese is drawn with the font
chosen by :mod:`bertcurve.viz.fonts`. Saving is :mod:`bertcurve.stages.plot`'s job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bertcurve.curves import policy
from bertcurve.curves.fits import FROM_KNEE, KNEE_FAMILIES
from bertcurve.curves.logs import Series, TrainingLog
from bertcurve.errors import UserError
from bertcurve.progress import more_time

LANGS = ("zh", "en", "both")

# Okabe-Ito: distinguishable for colour-blind readers and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
C_TRAIN = "#56B4E9"
C_TRAIN_SMOOTH = "#0072B2"
C_EVAL = "#D55E00"
C_LOSS = "#E69F00"
C_LOSS_SMOOTH = "#B35C00"
C_FIT = "#009E73"
C_LINEAR = "#CC3311"
C_LR = "#CC79A7"
C_GREY = "#777777"

STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "axes.grid": True,
    "grid.color": "#E5E5E5",
    "grid.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 13,
    "axes.titleweight": "normal",
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5,
    "figure.titlesize": 15,
    "figure.titleweight": "normal",
}


def style() -> dict[str, Any]:
    """rcParams for every figure: :data:`STYLE`, with bold titles when the CJK font has a bold face."""
    from bertcurve.viz.fonts import configure_matplotlib, has_bold

    font = configure_matplotlib()
    rc = dict(STYLE)
    if has_bold(font.family):
        rc["axes.titleweight"] = rc["figure.titleweight"] = "bold"
    return rc


# ------------------------------------------------------------------ labels
def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise UserError(f"--lang must be one of {', '.join(LANGS)}, not {lang!r}")
    return lang


def label(en: str, zh: str, lang: str) -> str:
    """``en``, ``zh`` or ``"en | zh"`` (the seed's bilingual style) for ``lang``."""
    if lang == "en":
        return en
    if lang == "zh":
        return zh
    return f"{en} | {zh}"


def title(en: str, zh: str, lang: str, width: int = 62) -> str:
    """A panel title: like :func:`label`, but on two lines when both languages would not fit one.
    (A CJK character is about twice as wide as a Latin one.)"""
    if lang == "both" and len(en) + 2 * len(zh) + 3 > width:
        return f"{en}\n{zh}"
    return label(en, zh, lang)


def block(en: str, zh: str, lang: str) -> str:
    """Like :func:`label` but for notes: both languages on separate lines."""
    return f"{en}\n{zh}" if lang == "both" else label(en, zh, lang)


# Axis and legend vocabulary shared by every figure.
_WORDS: dict[str, tuple[str, str]] = {
    "step": ("Training step", "训练步数"),
    "tokens": ("Tokens seen", "已训练词元数"),
    "train_mlm_accuracy": ("MLM accuracy, training batch", "MLM 准确率（训练批次）"),
    "eval_mlm_accuracy": ("MLM accuracy, held-out set", "MLM 准确率（验证集）"),
    "eval_mlm_top5_accuracy": ("MLM top-5 accuracy, held-out", "MLM 前5准确率（验证集）"),
    "eval_mlm_accuracy_at_mask": ("at [MASK] inputs, held-out", "[MASK] 处准确率（验证集）"),
    "train_loss": ("Training loss", "训练损失"),
    "eval_loss": ("Held-out loss", "验证集损失"),
    "train_nsp_accuracy": ("NSP accuracy, training batch", "NSP 准确率（训练批次）"),
    "eval_nsp_accuracy": ("NSP accuracy, held-out", "NSP 准确率（验证集）"),
    "lr": ("Learning rate", "学习率"),
    "tokens_per_s": ("Throughput (tokens/s)", "吞吐量（词元/秒）"),
    "grad_norm": ("Gradient norm", "梯度范数"),
}


def literal(text: str) -> str:
    """User text (run, log, metric names) drawn as written: ``$`` escaped so matplotlib never reads
    it as mathtext (``$x^$`` would raise, ``cost $5 vs $7`` would render as math)."""
    return str(text).replace("$", r"\$")


def metric_label(name: str, lang: str) -> str:
    en, zh = _WORDS.get(name, (literal(name.replace("_", " ")), literal(name.replace("_", " "))))
    return label(en, zh, lang)


def short_metric_label(name: str, lang: str) -> str:
    """Axis label without the split qualifier (the legend says which split)."""
    if name.endswith("mlm_accuracy"):
        return label("MLM accuracy", "MLM 准确率", lang)
    if name.endswith("nsp_accuracy"):
        return label("NSP accuracy", "NSP 准确率", lang)
    if name.endswith("loss"):
        return label("Loss", "损失", lang)
    return metric_label(name, lang)


is_accuracy = policy.is_accuracy


# ------------------------------------------------------------------ helpers
def smooth(values: np.ndarray, window: int | None = None) -> tuple[np.ndarray, int]:
    """Centred moving average whose window shrinks symmetrically at the ends.

    Shrinking (instead of padding) keeps the first and last points unbiased, which
    matters for learning curves: they are steepest at the start. ``window``
    defaults to about 1/40 of the series, made odd. Returns the smoothed values
    and the window used.
    """
    v = np.asarray(values, dtype=float)
    n = len(v)
    if window is None:
        window = max(1, n // 40)
    half = max(0, min(int(window), n) // 2)
    if half == 0 or n < 3:
        return v.copy(), 1
    idx = np.arange(n)
    hw = np.minimum(half, np.minimum(idx, n - 1 - idx))
    csum = np.concatenate([[0.0], np.cumsum(v)])
    out = (csum[idx + hw + 1] - csum[idx - hw]) / (2 * hw + 1)
    return out, 2 * half + 1


MAX_DRAWN_POINTS = 4000


def thin(*arrays: np.ndarray, max_points: int = MAX_DRAWN_POINTS) -> tuple[np.ndarray, ...]:
    """Every k-th point so at most ``max_points`` are drawn: a 1M-point log draws as fast as a
    small one and looks the same at figure resolution. Statistics always use every point."""
    n = len(arrays[0])
    if n <= max_points:
        return arrays
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
    return tuple(np.asarray(a)[idx] for a in arrays)


def tail_count(n: int, share: float = 0.05) -> int:
    """How many of ``n`` points :func:`tail_mean` averages."""
    return max(1, int(round(n * share)))


def tail_mean(values: np.ndarray, share: float = 0.05) -> float:
    """Mean of the last ``share`` of the points (at least one): where a noisy run ended."""
    v = np.asarray(values, dtype=float)
    return float(np.mean(v[-tail_count(len(v), share):]))


def _step_formatter(max_step: float) -> FuncFormatter:
    """Steps as 20k / 1.5M instead of 20000 / 1500000."""

    def fmt(x: float, _pos: Any) -> str:
        if x == 0:
            return "0"
        if max_step >= 10_000:
            if abs(x) >= 1_000_000:
                return f"{x / 1e6:g}M"
            return f"{x / 1e3:g}k"
        return f"{x:g}"

    return FuncFormatter(fmt)


def _percent(ax: Any, axis: str = "y") -> None:
    formatter = FuncFormatter(lambda v, _p: f"{v * 100:.0f}%")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(formatter)


def _steps_axis(ax: Any, max_step: float, lang: str, *, xlabel: bool = True) -> None:
    ax.xaxis.set_major_formatter(_step_formatter(max_step))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    if xlabel:
        ax.set_xlabel(label(*_WORDS["step"], lang))


def _note(ax: Any, text: str, *, loc: str = "upper left", color: str = "#333333", warn: bool = False) -> None:
    """A small boxed text in a corner of the axes."""
    positions = {
        "upper left": (0.02, 0.97, "left", "top"),
        "upper right": (0.98, 0.97, "right", "top"),
        "lower right": (0.98, 0.03, "right", "bottom"),
        "lower left": (0.02, 0.03, "left", "bottom"),
        "center": (0.5, 0.5, "center", "center"),
        "center right": (0.98, 0.5, "right", "center"),
    }
    x, y, ha, va = positions[loc]
    face = "#FDECEA" if warn else "#F7F7F7"
    edge = "#CC3311" if warn else "#BBBBBB"
    ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=9, color=color, zorder=10,
            multialignment="left",
            bbox={"boxstyle": "round,pad=0.4", "facecolor": face, "edgecolor": edge, "alpha": 0.95})


def _empty(ax: Any, text: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color=C_GREY, fontsize=11)


def _max_step(log: TrainingLog) -> float:
    return max((s.last_step for s in log.series.values() if len(s)), default=1.0)


def _plot_noisy(ax: Any, s: Series, *, raw_color: str, smooth_color: str, name: tuple[str, str], lang: str,
                window: int | None = None) -> int:
    """Raw series as a thin pale line plus its moving average; returns the window used."""
    en, zh = name
    sm, w = smooth(s.values, window)
    if w > 1:
        ax.plot(*thin(s.steps, s.values), color=raw_color, lw=0.7, alpha=0.5,
                label=label(f"{en}, raw", f"{zh}（原始）", lang))
        ax.plot(*thin(s.steps, sm), color=smooth_color, lw=2.0,
                label=label(f"{en}, moving average of {w}", f"{zh}（{w} 点移动平均）", lang))
    else:
        ax.plot(s.steps, s.values, color=smooth_color, lw=1.6, marker="o", ms=3, label=label(en, zh, lang))
    return w


def _plot_eval(ax: Any, log: TrainingLog, name: str, color: str, lang: str, *, se_name: str | None = None) -> None:
    s = log.series[name]
    ax.plot(s.steps, s.values, color=color, lw=1.6, marker="o", ms=3.2, zorder=5, label=metric_label(name, lang))
    if se_name and se_name in log.series:
        se = log.series[se_name]
        common, i_s, i_se = np.intersect1d(s.steps, se.steps, return_indices=True)
        if len(common):
            lo = s.values[i_s] - 1.96 * se.values[i_se]
            hi = s.values[i_s] + 1.96 * se.values[i_se]
            ax.fill_between(common, lo, hi, color=color, alpha=0.18, lw=0, zorder=4,
                            label=label("95% CI of held-out accuracy", "验证集准确率 95% 置信区间", lang))


def _suptitle(fig: Figure, en: str, zh: str, lang: str, log_name: str | None = None) -> None:
    text = label(en, zh, lang)
    if log_name:
        text = f"{text} — {literal(log_name)}"
    fig.suptitle(text)


def new_figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


# ------------------------------------------------------------------ figure 1: training curves
def _panel_mlm_accuracy(ax_acc: Any, log: TrainingLog, lang: str) -> None:
    """(a) MLM accuracy (held-out and batch), else another tool's main metric."""
    ser = log.series
    ax_acc.set_title(title("MLM accuracy", "MLM 准确率", lang))
    has_acc = False
    if "train_mlm_accuracy" in ser:
        _plot_noisy(ax_acc, ser["train_mlm_accuracy"], raw_color=C_TRAIN, smooth_color=C_TRAIN_SMOOTH,
                    name=("training batch", "训练批次"), lang=lang)
        has_acc = True
    if "eval_mlm_accuracy" in ser:
        _plot_eval(ax_acc, log, "eval_mlm_accuracy", C_EVAL, lang, se_name="eval_mlm_accuracy_se")
        has_acc = True
    if "eval_mlm_top5_accuracy" in ser:
        s = ser["eval_mlm_top5_accuracy"]
        ax_acc.plot(s.steps, s.values, color=C_EVAL, lw=1.2, ls="--", alpha=0.7,
                    label=metric_label("eval_mlm_top5_accuracy", lang))
    if "eval_mlm_accuracy_at_mask" in ser:
        # Below the overall accuracy until the model reads context: kept tokens are copied early.
        s = ser["eval_mlm_accuracy_at_mask"]
        ax_acc.plot(s.steps, s.values, color=C_EVAL, lw=1.2, ls=":", alpha=0.9,
                    label=metric_label("eval_mlm_accuracy_at_mask", lang))
    if has_acc:
        _percent(ax_acc)
        ax_acc.set_ylabel(label("MLM accuracy", "MLM 准确率", lang))
        if "eval_mlm_accuracy_at_mask" in ser:
            # Six entries: give them the top of the panel rather than cover a curve.
            top = max(float(np.nanmax(line.get_ydata())) for line in ax_acc.get_lines())
            ax_acc.set_ylim(top=1.6 * top)
            ax_acc.legend(loc="upper left", fontsize=8)
        else:
            ax_acc.legend(loc="best", fontsize=8.5)
        best = ser["eval_mlm_accuracy"] if "eval_mlm_accuracy" in ser else ser["train_mlm_accuracy"]
        last_sm, k = tail_mean(best.values), tail_count(len(best.values))
        # In the title, where no legend or curve can hide it; an average says so, since the
        # run's own "done" line reports the last evaluation alone.
        mean_en, mean_zh = (f" (mean of the last {k})", f"（最后 {k} 次的均值）") if k > 1 else ("", "")
        ax_acc.set_title(title(f"MLM accuracy — end of run {last_sm:.1%}{mean_en}",
                               f"MLM 准确率——结束时 {last_sm:.1%}{mean_zh}", lang))
    else:
        other = _other_metric(log)
        if other is not None:
            # Another tool's log (an LM loss, a log-perplexity, ...): its main metric goes here.
            ax_acc.set_title(title(metric_label(other, lang), metric_label(other, lang), lang))
            _plot_noisy(ax_acc, ser[other], raw_color=C_TRAIN, smooth_color=C_TRAIN_SMOOTH,
                        name=(other, other), lang=lang)
            ax_acc.set_ylabel(metric_label(other, lang))
            ax_acc.legend(loc="best", fontsize=8.5)
        else:
            _empty(ax_acc, label("no MLM accuracy in this log", "日志中没有 MLM 准确率", lang))


def _panel_nsp_or_eval_loss(ax_b: Any, log: TrainingLog, lang: str) -> None:
    """(b) NSP accuracy when logged, else the held-out loss."""
    ser = log.series
    nsp = [n for n in ("train_nsp_accuracy", "eval_nsp_accuracy") if n in ser]
    if nsp:
        ax_b.set_title(title("Next-sentence prediction (NSP) accuracy", "下一句预测 (NSP) 准确率", lang))
        for n in nsp:
            if n.startswith("train"):
                _plot_noisy(ax_b, ser[n], raw_color="#E3B7D3", smooth_color=C_LR,
                            name=("training batch", "训练批次"), lang=lang)
            else:
                _plot_eval(ax_b, log, n, C_EVAL, lang)
        ax_b.axhline(0.5, color=C_GREY, ls="--", lw=1.2, label=label("chance (50%)", "随机猜测 (50%)", lang))
        _percent(ax_b)
        ax_b.set_ylabel(label("NSP accuracy", "NSP 准确率", lang))
        ax_b.legend(loc="best", fontsize=8.5)
        main = ser[nsp[-1]]
        late = main.values[len(main) // 2:]
        if len(late) >= 5 and abs(float(np.mean(late)) - 0.5) < 0.03:
            _note(ax_b, block(
                f"NSP stays at chance (mean {np.mean(late):.1%} over the second half):\nthe NSP head learned nothing",
                f"NSP 始终处于随机水平（后半程均值 {np.mean(late):.1%}）：\nNSP 头没有学到任何东西", lang),
                loc="upper left", warn=True, color="#8B1A1A")
    elif "eval_loss" in ser:
        s = ser["eval_loss"]
        ppl = _perplexity_text(s.values[-1])
        ax_b.set_title(title(f"Held-out loss — last {s.values[-1]:.3f} (perplexity {ppl})",
                             f"验证集损失——最终 {s.values[-1]:.3f}（困惑度 {ppl}）", lang))
        ax_b.plot(s.steps, s.values, color=C_EVAL, marker="o", ms=3.2, lw=1.6, label=metric_label("eval_loss", lang))
        ax_b.set_ylabel(label("Loss (nats)", "损失（奈特）", lang))
        ax_b.legend(loc="best")
    else:
        ax_b.set_title(title("NSP accuracy / held-out loss", "NSP 准确率 / 验证集损失", lang))
        _empty(ax_b, label("neither NSP accuracy nor held-out loss logged",
                           "日志中既无 NSP 准确率也无验证集损失", lang))


def _panel_loss(ax_loss: Any, log: TrainingLog, lang: str) -> None:
    """(c) training and held-out loss."""
    ser = log.series
    ax_loss.set_title(title("Loss", "损失", lang))
    if "train_loss" in ser or "eval_loss" in ser:
        if "train_loss" in ser:
            _plot_noisy(ax_loss, ser["train_loss"], raw_color="#F3CF8A", smooth_color=C_LOSS_SMOOTH,
                        name=("training loss", "训练损失"), lang=lang)
        if "eval_loss" in ser:
            _plot_eval(ax_loss, log, "eval_loss", C_EVAL, lang)
        ax_loss.set_ylabel(label("Loss (nats)", "损失（奈特）", lang))
        ax_loss.legend(loc="best", fontsize=8.5)
    else:
        _empty(ax_loss, label("no loss in this log", "日志中没有损失", lang))


def _panel_lr(ax_lr: Any, log: TrainingLog, lang: str) -> None:
    """(d) learning rate (log axis), else throughput."""
    ser = log.series
    if "lr" in ser and np.any(ser["lr"].values > 0):
        s = ser["lr"]
        ax_lr.set_title(title("Learning-rate schedule (log axis)", "学习率调度（对数轴）", lang))
        pos = s.values > 0
        ax_lr.plot(*thin(s.steps[pos], s.values[pos]), color=C_LR, lw=2)
        ax_lr.set_yscale("log")
        peak = float(s.values.max())
        # The cosine tail runs to 0, which a log axis would stretch over ten decades: show three.
        ax_lr.set_ylim(max(float(s.values[pos].min()), peak / 1e3) * 0.8, peak * 1.6)
        i_peak = int(np.argmax(s.values))
        ax_lr.annotate(label(f"peak {peak:.2g} at step {int(s.steps[i_peak]):,}",
                             f"峰值 {peak:.2g}（第 {int(s.steps[i_peak]):,} 步）", lang),
                       xy=(s.steps[i_peak], peak), xytext=(12, 6), textcoords="offset points", fontsize=9)
        ax_lr.set_ylabel(label("Learning rate", "学习率", lang))
        if np.any(s.values <= 0):
            _note(ax_lr, block("reaches 0 at the end (not drawable on a log axis)",
                               "末尾降至 0（对数轴无法显示）", lang), loc="lower left")
    elif "tokens_per_s" in ser:
        s = ser["tokens_per_s"]
        ax_lr.set_title(title("Throughput", "训练吞吐量", lang))
        ax_lr.plot(*thin(s.steps, s.values), color=C_LR, lw=1.5)
        ax_lr.set_ylabel(label("tokens / s", "词元 / 秒", lang))
    else:
        ax_lr.set_title(title("Learning-rate schedule", "学习率调度", lang))
        _empty(ax_lr, label("no learning rate in this log", "日志中没有学习率", lang))


def training_curves(log: TrainingLog, *, lang: str = "both") -> Figure:
    """The seed's 4-in-1 done right: MLM accuracy (held-out and batch), NSP or held-out
    loss, loss, and the learning rate on a log axis."""
    lang = check_lang(lang)
    fig, axes = new_figure(14, 9.5, 2, 2)
    max_step = _max_step(log)
    ax_acc, ax_b, ax_loss, ax_lr = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]

    _panel_mlm_accuracy(ax_acc, log, lang)
    _panel_nsp_or_eval_loss(ax_b, log, lang)
    _panel_loss(ax_loss, log, lang)
    _panel_lr(ax_lr, log, lang)

    for ax in axes.flat:
        if ax.lines or ax.collections:   # an empty panel keeps no ticks (no "0.0002k")
            _steps_axis(ax, max_step, lang)
    _suptitle(fig, "Training curves", "训练曲线", lang, log.name)
    return fig


def _perplexity_text(loss: float) -> str:
    """exp(loss) with three significant digits (a loss of 0.136 is perplexity 1.15, not "1")."""
    ppl = float(np.exp(min(loss, 50)))
    return f"{ppl:,.0f}" if ppl >= 1000 else f"{ppl:.3g}"


def _other_metric(log: TrainingLog) -> str | None:
    """The log's main metric when it is neither an MLM accuracy nor the loss the loss panel draws."""
    try:
        name = log.default_metric()
    except UserError:
        return None
    return None if name in ("train_loss", "eval_loss", "train_mlm_accuracy", "eval_mlm_accuracy") else name


# ------------------------------------------------------------------ figure 3: loss analysis
def _phase_rates(steps: np.ndarray, values: np.ndarray, n_phases: int = 4) -> list[tuple[float, float, float]]:
    """(start, end, slope per 1,000 steps) of the least-squares line through each quarter of training."""
    from bertcurve.curves.stats import slope_in_windows

    if len(steps) < 3 * n_phases or np.ptp(steps) == 0:
        return []
    edges = np.linspace(float(steps[0]), float(steps[-1]), n_phases + 1)
    return [(w["start_step"], w["end_step"], w["slope"] * 1000.0)
            for w in slope_in_windows(steps.astype(float), values, edges) if w["slope"] is not None]


def _smooth_rate(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int]:
    """Decrease of ``values`` per 1,000 steps, smoothed; and the window (points) used."""
    from scipy.signal import savgol_filter

    n = len(values)
    if n < 5:
        return (-np.gradient(values, steps) * 1000.0 if n > 1 else np.zeros(n)), 1
    window = max(5, n // 8) | 1
    window = min(window, n if n % 2 else n - 1)
    delta = float(np.median(np.diff(steps)))
    return -savgol_filter(values, window, polyorder=2, deriv=1, delta=delta, mode="interp") * 1000.0, window


def loss_analysis(log: TrainingLog, *, lang: str = "both", fit: Any = None) -> Figure:
    """Loss with its moving average; loss on a log-step axis with the fitted
    ``L∞ + A·t^(−α)`` (``fit``, when there is one); and the rate of improvement per
    quarter of training beside the learning rate, which shows the schedule confound."""
    lang = check_lang(lang)
    ser = log.series
    name = "train_loss" if "train_loss" in ser else "eval_loss" if "eval_loss" in ser else None
    if name is None:
        raise UserError(f"{log.path}: no loss in this log, so there is no loss analysis to draw")
    s = log.metric(name, min_points=3)
    fig, axes = new_figure(17, 5.6, 1, 3)
    ax_a, ax_b, ax_c = axes[0]
    max_step = _max_step(log)
    sm, w = smooth(s.values)

    # (a) raw + smoothed (+ held-out)
    _plot_noisy(ax_a, s, raw_color="#F3CF8A", smooth_color=C_LOSS_SMOOTH, name=_WORDS[name], lang=lang)
    if name != "eval_loss" and "eval_loss" in ser:
        _plot_eval(ax_a, log, "eval_loss", C_EVAL, lang)
    ax_a.set_ylabel(label("Loss (nats)", "损失（奈特）", lang))
    ax_a.legend(loc="best")
    end = tail_mean(s.values)
    ax_a.set_title(title(f"Loss: {s.values[0]:.2f} → {end:.2f} at the end", f"损失：{s.values[0]:.2f} → 结束时 {end:.2f}",
                         lang))

    # (b) log step axis, with the saturating fit
    ax_b.set_title(title("Loss on a log-step axis, with fit", "对数步数轴上的损失与拟合", lang))
    pos = s.steps > 0
    ax_b.plot(*thin(s.steps[pos], s.values[pos]), color="#F3CF8A", lw=0.7, alpha=0.6,
              label=label("raw", "原始", lang))
    ax_b.plot(*thin(s.steps[pos], sm[pos]), color=C_LOSS_SMOOTH, lw=1.8,
              label=label("moving average", "移动平均", lang))
    if fit is not None:
        grid = np.geomspace(max(float(s.steps[pos][0]), 1.0, fit_start(fit)), float(s.steps[-1]), 300)
        ax_b.plot(grid, fit.predict(grid), color=C_FIT, lw=2.2, ls="--", label=fit_label(fit, lang))
        floor = fit_asymptote(fit)
        # A floor pinned at its bound (e.g. 0) is not an estimate; do not draw it as one.
        if floor is not None and np.isfinite(floor) and not set(fit.at_bounds) & {"a", "L"}:
            ax_b.axhline(floor, color=C_FIT, lw=1, ls=":",
                         label=label(f"fitted floor L∞ = {floor:.2f}", f"拟合下限 L∞ = {floor:.2f}", lang))
    else:
        _note(ax_b, block("no saturating fit converged", "饱和曲线拟合未收敛", lang), loc="lower left")
    lo_y, hi_y = float(np.min(s.values)), float(np.max(s.values))
    if hi_y > lo_y:  # a flat loss keeps matplotlib's automatic limits
        ax_b.set_ylim(lo_y - 0.05 * (hi_y - lo_y), hi_y + 0.08 * (hi_y - lo_y))
    ax_b.set_xscale("log")
    ax_b.set_xlabel(label("Training step (log axis)", "训练步数（对数轴）", lang))
    ax_b.set_ylabel(label("Loss (nats)", "损失（奈特）", lang))
    ax_b.legend(loc="best")

    # (c) rate of improvement, beside the learning rate
    ax_c.set_title(title("How fast the loss still falls", "损失下降速度", lang))
    # A derivative amplifies noise: a Savitzky-Golay derivative over a wide window (polynomial
    # fits at the ends instead of shrinking windows, which would make the ends spike).
    rate, w_rate = _smooth_rate(s.steps.astype(float), s.values)
    ax_c.plot(*thin(s.steps, rate), color=C_LOSS_SMOOTH, lw=1.3, alpha=0.9,
              label=label("decrease per 1k steps (smoothed)", "每千步下降量（平滑）", lang))
    for i, (lo, hi, slope) in enumerate(_phase_rates(s.steps, s.values)):
        ax_c.fill_between([lo, hi], 0, -slope, color=C_LOSS, alpha=0.25, lw=0,
                          label=label("per quarter of training", "每四分之一训练期", lang) if i == 0 else None)
        ax_c.text((lo + hi) / 2, -slope, f"{-slope:.3g}", ha="center", va="bottom", fontsize=9, color="#6B3A00")
    ax_c.axhline(0, color=C_GREY, lw=0.8)
    ax_c.set_ylabel(label("Loss decrease per 1,000 steps", "每千步损失下降量", lang))
    if len(rate) > 4:
        hi = float(np.nanpercentile(rate, 99)) * 1.25
        lo = min(0.0, float(np.nanpercentile(rate, 1)))
        if hi > lo:
            ax_c.set_ylim(lo - 0.05 * (hi - lo), hi)
    handles, labels_ = ax_c.get_legend_handles_labels()
    if "lr" in ser:
        lr = ser["lr"]
        twin = ax_c.twinx()
        twin.plot(lr.steps, lr.values, color=C_LR, lw=1.4, ls="--", label=label("learning rate", "学习率", lang))
        twin.set_ylabel(label("Learning rate", "学习率", lang), color=C_LR)
        twin.tick_params(axis="y", colors=C_LR)
        twin.grid(False)
        twin.spines["right"].set_visible(True)
        twin.set_ylim(bottom=0)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels_ = handles + h2, labels_ + l2
    ax_c.legend(handles, labels_, loc="upper right", fontsize=8.5)

    for ax in (ax_a, ax_c):
        _steps_axis(ax, max_step, lang)
    _suptitle(fig, "Loss analysis", "损失分析", lang, log.name)
    return fig


# ------------------------------------------------------------------ figure 4: comparison of runs
def common_metric(logs: Sequence[TrainingLog]) -> str:
    """The metric every log has, preferring the held-out accuracy (see CONTRACTS.md)."""
    for name in ("eval_mlm_accuracy", "train_mlm_accuracy"):
        if all(name in log.series for log in logs):
            return name
    defaults = {log.default_metric() for log in logs}
    if len(defaults) == 1:
        return defaults.pop()
    raise UserError(
        "the logs share no metric to compare (" + "; ".join(f"{log.name}: {log.default_metric()}" for log in logs)
        + "); pick one they all have with --metric"
    )


def unique_names(logs: Sequence[TrainingLog]) -> list[str]:
    """Display names, made unique by appending the parent folder (then a number) when two clash."""
    original = [log.name for log in logs]
    names = list(original)
    for i, log in enumerate(logs):
        if original.count(log.name) > 1:
            # A run is named after its folder (log.path is RUN/metrics.jsonl): prefix the folder above it.
            base = log.path.parent if log.path.name == "metrics.jsonl" else log.path
            names[i] = f"{base.parent.name}/{log.name}" if base.parent.name else log.name
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if names.count(n) > 1:
            seen[n] = seen.get(n, 0) + 1
            names[i] = f"{n} ({seen[n]})"
    return names


def comparison(logs: Sequence[TrainingLog], *, lang: str = "both", metric: str | None = None) -> Figure:
    """Two or more runs side by side: the metric and the loss over steps, and their
    final and best (smoothed) values."""
    lang = check_lang(lang)
    if len(logs) < 2:
        raise UserError("a comparison needs at least two logs; give two or more sources")
    metric = metric or common_metric(logs)
    for log in logs:
        log.metric(metric)  # UserError naming the log that lacks it
    names = [literal(n) for n in unique_names(logs)]
    fig, axes = new_figure(17, 5.8, 1, 3)
    ax_m, ax_l, ax_bar = axes[0]
    max_step = max(_max_step(log) for log in logs)
    finals, bests = [], []
    for i, (log, name) in enumerate(zip(logs, names)):
        color = PALETTE[i % len(PALETTE)]
        s = log.series[metric]
        sm, w = smooth(s.values)
        if w > 1:
            ax_m.plot(*thin(s.steps, s.values), color=color, lw=0.6, alpha=0.25)
        ax_m.plot(*thin(s.steps, sm), color=color, lw=2, label=name)
        tail = max(1, len(s) // 20)
        finals.append((float(np.mean(s.values[-tail:])), float(np.std(s.values[-tail:]))))
        bests.append(float(np.max(sm)))
        loss_name = "eval_loss" if "eval_loss" in log.series else "train_loss" if "train_loss" in log.series else None
        if loss_name:
            ls = log.series[loss_name]
            ax_l.plot(ls.steps, smooth(ls.values)[0], color=color, lw=2,
                      label=f"{name} ({metric_label(loss_name, lang)})")
    ax_m.set_title(title(*_WORDS.get(metric, (literal(metric), literal(metric))), lang))
    ax_m.set_ylabel(short_metric_label(metric, lang))
    if is_accuracy(metric):
        _percent(ax_m)
    ax_m.legend(loc="best")
    ax_l.set_title(title("Loss (smoothed)", "损失（平滑）", lang))
    ax_l.set_ylabel(label("Loss (nats)", "损失（奈特）", lang))
    if ax_l.lines:
        ax_l.legend(loc="best")
    else:
        _empty(ax_l, label("no loss in these logs", "日志中没有损失", lang))
    lengths = [_max_step(log) for log in logs]
    for ax in (ax_m, ax_l):
        if min(lengths) > 0 and max(lengths) / min(lengths) >= 10:
            # Runs of very different length (e.g. 120 vs 100,000 steps): a log axis shows both.
            ax.set_xscale("log")
            ax.set_xlabel(label("Training step (log axis)", "训练步数（对数轴）", lang))
        else:
            _steps_axis(ax, max_step, lang)

    # (c) final and best values as grouped bars: one scale, one kind of quantity.
    x = np.arange(len(logs))
    width = 0.38
    f_vals = [f for f, _ in finals]
    f_err = [e for _, e in finals]
    b1 = ax_bar.bar(x - width / 2, f_vals, width, yerr=f_err, capsize=4, color=[PALETTE[i % 8] for i in x],
                    alpha=0.85, label=label("final (mean of last 5%, ±SD)", "最终值（最后 5% 的均值 ± 标准差）", lang))
    b2 = ax_bar.bar(x + width / 2, bests, width, color=[PALETTE[i % 8] for i in x], alpha=0.4, hatch="//",
                    edgecolor="white", label=label("best moving average", "移动平均最大值", lang))
    fmt = (lambda v: f"{v:.1%}") if is_accuracy(metric) else (lambda v: f"{v:.3g}")
    for bars, vals, errs in ((b1, f_vals, f_err), (b2, bests, [0.0] * len(bests))):
        for bar, v, e in zip(bars, vals, errs):
            ax_bar.text(bar.get_x() + bar.get_width() / 2, max(v, 0) + e, fmt(v), ha="center", va="bottom",
                        fontsize=9.5)
    top = max(max(f + e for f, e in finals), max(bests))
    if top > 0:
        ax_bar.set_ylim(0, top * 1.3)
    ax_bar.set_xticks(x, names, rotation=15 if len(logs) > 3 else 0)
    ax_bar.set_title(title("Where each run ended", "各次训练的最终水平", lang))
    ax_bar.set_ylabel(short_metric_label(metric, lang))
    if is_accuracy(metric):
        _percent(ax_bar)
    ax_bar.grid(axis="x", visible=False)
    ax_bar.legend(loc="upper left")
    _suptitle(fig, "Comparison of runs", "多次训练对比", lang)
    return fig


# ------------------------------------------------------------------ figure 2: correlation analysis
def _draw_residuals(ax_r: Any, x: np.ndarray, resid_lin: np.ndarray, resid_fit: np.ndarray | None,
                    diag: Any, metric: str, ms: float, lang: str) -> None:
    """(b) the residuals of the linear fit (and of the learning-curve fit) over steps."""
    ax_r.set_title(title("Residuals over steps", "残差随步数的变化", lang))
    ax_r.scatter(*thin(x, resid_lin), s=ms, color=C_LINEAR, alpha=0.35, lw=0,
                 label=label("linear fit", "线性拟合", lang))
    ax_r.plot(*thin(x, smooth(resid_lin)[0]), color=C_LINEAR, lw=1.8)
    if resid_fit is not None:
        ax_r.scatter(*thin(x, resid_fit), s=ms, color=C_FIT, alpha=0.35, lw=0,
                     label=label("learning-curve fit", "学习曲线拟合", lang))
        ax_r.plot(*thin(x, smooth(resid_fit)[0]), color=C_FIT, lw=1.8)
    ax_r.axhline(0, color="#333333", lw=1)
    if is_accuracy(metric):
        ax_r.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v * 100:+.0f} pt" if v else "0"))
    ax_r.set_ylabel(label("Residual (observed − fitted)", "残差（观测 − 拟合）", lang))
    ax_r.legend(loc="lower right")
    if diag.durbin_watson < 1.5:
        _note(ax_r, block("a curved band, not a cloud: the line has the wrong shape",
                          "残差呈弯曲带状而非随机云：直线模型形状不对", lang), loc="upper right", warn=True,
              color="#8B1A1A")


def _draw_residual_autocorrelation(ax_acf: Any, x: np.ndarray, resid_lin: np.ndarray,
                                   resid_fit: np.ndarray | None, r: Any, diag: Any, level: float,
                                   lang: str) -> None:
    """(c) residual autocorrelation, with the naive and the effective-n statistics of Pearson r."""
    from statsmodels.tsa.stattools import acf

    from bertcurve.curves import stats

    nlags = int(min(40, max(1, len(x) // 4)))
    lags = np.arange(1, nlags + 1)
    band = 1.96 / np.sqrt(len(x))
    ax_acf.set_title(title("Autocorrelation of residuals", "残差自相关", lang))
    ax_acf.axhspan(-band, band, color="#DDDDDD", alpha=0.7,
                   label=label("95% band if independent", "独立时的 95% 范围", lang))
    series_acf = [(resid_lin, C_LINEAR, label("linear fit", "线性拟合", lang), -0.2)]
    if resid_fit is not None:
        series_acf.append((resid_fit, C_FIT, label("learning-curve fit", "学习曲线拟合", lang), 0.2))
    for res, color, lab, dx in series_acf:
        values = acf(res, nlags=nlags, fft=True)[1:] if np.ptp(res) > 0 else np.zeros(nlags)
        ax_acf.vlines(lags + dx, 0, values, color=color, lw=2, label=lab)
    ax_acf.axhline(0, color="#333333", lw=0.8)
    # The statistics go where an autocorrelation plot of a learning curve is empty: below zero.
    n_eff = diag.effective_sample_size
    p_eff = stats.correlation_pvalue(r.statistic, n_eff)
    lo, hi = stats.fisher_interval(r.statistic, n_eff, level)
    pct = f"{level:.0%}"
    _note(ax_acf, block(
        f"Pearson r = {r.statistic:.4f} (naive p = {r.pvalue:.2g})\n"
        f"naive {pct} CI [{r.ci_low:.2f}, {r.ci_high:.2f}]\n"
        f"Durbin–Watson {diag.durbin_watson:.2f}, lag-1 {diag.lag1_autocorrelation:.2f}\n"
        f"effective n ≈ {n_eff:.0f} of {diag.n}\n"
        f"→ {pct} CI [{lo:.2f}, {hi:.2f}], p = {p_eff:.2g}",
        f"Pearson r = {r.statistic:.4f}（朴素 p = {r.pvalue:.2g}）\n"
        f"朴素 {pct} 置信区间 [{r.ci_low:.2f}, {r.ci_high:.2f}]\n"
        f"Durbin–Watson {diag.durbin_watson:.2f}，一阶自相关 {diag.lag1_autocorrelation:.2f}\n"
        f"有效样本量 ≈ {n_eff:.0f} / {diag.n}\n"
        f"→ {pct} 置信区间 [{lo:.2f}, {hi:.2f}]，p = {p_eff:.2g}", lang), loc="lower left")
    ax_acf.set_xlabel(label("Lag (logged points)", "滞后（记录点数）", lang))
    ax_acf.set_ylabel(label("Autocorrelation", "自相关系数", lang))
    ax_acf.set_ylim(-1, 1)
    ax_acf.legend(loc="upper right")


def correlation_analysis(log: TrainingLog, *, lang: str = "both", metric: str | None = None, fit: Any = None,
                         level: float = policy.DEFAULT_LEVEL) -> Figure:
    """Scatter of the metric over steps with the seed's linear fit and the best
    learning-curve fit (``fit``); residuals of both; and the residual
    autocorrelation that makes the naive p-value of Pearson r far too confident."""
    from bertcurve.curves import stats

    lang = check_lang(lang)
    metric = metric or log.default_metric()
    s = log.metric(metric, min_points=4, allow_constant=False)
    x = s.steps.astype(float)
    y = s.values
    r = stats.pearson(x, y, level)
    trend = stats.linear_trend(x, y, level)
    linear = trend.intercept + trend.slope * x
    resid_lin = y - linear
    diag = stats.residual_diagnostics(resid_lin)
    resid_fit = y - fit.predict(x) if fit is not None else None

    fig, axes = new_figure(18, 6.2, 1, 3, width_ratios=[1.2, 1, 0.85])
    ax_s, ax_r, ax_acf = axes[0]
    max_step = float(x[-1])
    dense = len(x) > 300
    ms = 9 if dense else 22

    # (a) scatter + linear fit + learning-curve fit
    ax_s.set_title(title("Steps vs metric: linear fit and learning-curve fit", "步数与指标：线性拟合与学习曲线拟合", lang))
    ax_s.scatter(*thin(x, y), s=ms, color=C_TRAIN_SMOOTH, alpha=0.45, lw=0, label=metric_label(metric, lang))
    ax_s.plot(x[[0, -1]], linear[[0, -1]], color=C_LINEAR, lw=2, ls="--",
              label=label(f"linear fit (r = {r.statistic:.4f}, R² = {trend.r_squared:.4f})",
                          f"线性拟合（r = {r.statistic:.4f}，R² = {trend.r_squared:.4f}）", lang))
    if fit is not None:
        grid = np.linspace(max(x[0], fit_start(fit)), x[-1], 400)
        ax_s.plot(grid, fit.predict(grid), color=C_FIT, lw=2.4, label=fit_label(fit, lang))
    if is_accuracy(metric):
        _percent(ax_s)
    ax_s.set_ylabel(metric_label(metric, lang))
    ax_s.legend(loc="best", fontsize=8.5)
    _draw_residuals(ax_r, x, resid_lin, resid_fit, diag, metric, ms, lang)
    _draw_residual_autocorrelation(ax_acf, x, resid_lin, resid_fit, r, diag, level, lang)

    for ax in (ax_s, ax_r):
        _steps_axis(ax, max_step, lang)
    _suptitle(fig, f"Correlation analysis (Pearson r = {r.statistic:.4f})",
              f"相关性分析（Pearson r = {r.statistic:.4f}）", lang, log.name)
    return fig


# ------------------------------------------------------------------ fits shared by the figures
_MODEL_WORDS = {
    "power_law": ("power law", "幂律"),
    "exp_saturation": ("exponential saturation", "指数饱和"),
    "log_linear": ("log-linear", "对数线性"),
    "logistic_log": ("logistic in log t", "对数 t 的逻辑斯蒂"),
    "linear": ("linear", "线性"),
}
_MODEL_WORDS.update({m + FROM_KNEE: (f"{_MODEL_WORDS[m][0]} after the knee", f"拐点后{_MODEL_WORDS[m][1]}")
                     for m in KNEE_FAMILIES})


def direction_of(metric: str, series: Series) -> int:
    """+1 for a metric that grows with training, -1 for one that falls (:func:`policy.direction_of`)."""
    return policy.direction_of(metric, series.steps, series.values)


def fit_label(fit: Any, lang: str) -> str:
    """Legend text of a fitted curve: its family, formula and R²."""
    en, zh = _MODEL_WORDS.get(fit.model, (fit.model, fit.model))
    if getattr(fit, "from_knee", False):   # its R² is of the points from the knee on only
        return label(f"{en} fit {fit.formula} (R² = {fit.r_squared:.3f} from step {fit.first_step:,.0f})",
                     f"{zh}拟合（第 {fit.first_step:,.0f} 步起 R² = {fit.r_squared:.3f}）", lang)
    return label(f"{en} fit {fit.formula} (R² = {fit.r_squared:.3f})",
                 f"{zh}拟合（R² = {fit.r_squared:.3f}）", lang)


def fit_start(fit: Any) -> float:
    """The first step a fitted curve describes: its knee when it was fitted from the knee on."""
    return float(fit.first_step) if getattr(fit, "from_knee", False) and math.isfinite(fit.first_step) else 0.0


def forecast_label(fc: Any, lang: str) -> str:
    """Legend text of a combined forecast: its families and their weights."""
    parts = [(m, w) for m, w in fc.weights.items() if w >= 0.005]
    en = ", ".join(f"{_MODEL_WORDS.get(m, (m, m))[0]} {w:.0%}" for m, w in parts)
    zh = "，".join(f"{_MODEL_WORDS.get(m, (m, m))[1]} {w:.0%}" for m, w in parts)
    return label(f"forecast ({en})", f"预测（{zh}）", lang)


fit_asymptote = policy.asymptote
default_target = policy.default_target


@dataclass
class LogFits:
    """The fits and forecast the figures draw: those of the analysis (analysis.json, or computed
    here exactly as ``bertcurve analyze`` does, by :func:`policy.fit_and_choose`)."""

    metric: str
    direction: int
    fits: dict[str, Any]          # model name -> curves.FitResult
    best: Any                     # the forecast's leading fit of every point (CurveForecast.whole_fit), or None
    reason: str                   # how the forecast was made (or why there is none)
    loss: Any = None              # the main fit of the loss's forecast, or None
    forecaster: Any = None        # curves.forecast.CurveForecast of the metric
    level: float = policy.DEFAULT_LEVEL

    @property
    def forecast(self) -> Any:
        return self.forecaster

    @classmethod
    def compute(cls, log: TrainingLog, metric: str | None = None, *, with_loss: bool = True,
                analysis: dict | None = None, level: float | None = None,
                direction: str | None = None, schedule: Any = None) -> "LogFits":
        """The forecast of ``metric`` (and of the loss, ``with_loss``).

        ``analysis``: an analysis.json of this log; when it is about the same metric its fits and
        forecast are used as they are (figures then match the report, and nothing is refitted).
        ``level``: the confidence level (default: the analysis's, else policy.DEFAULT_LEVEL).
        ``direction``: "up"/"down" when the metric's name does not say. ``schedule``: the run's
        planned learning rate per step, when known (the schedule law then joins the candidates).
        """
        from bertcurve.curves.forecast import CurveForecast

        metric = metric or log.default_metric()
        s = log.metric(metric)
        saved = analysis if isinstance(analysis, dict) and (analysis.get("metric") or {}).get("name") == metric \
            and analysis.get("fits") and analysis.get("forecaster") else None
        if level is None:
            level = float((saved or {}).get("metric", {}).get("level") or policy.DEFAULT_LEVEL)
        policy.check_level(level)
        if saved is not None:
            fc = CurveForecast.from_dict(saved["forecaster"], saved["fits"],
                                         ranking=(saved.get("backtests") or {}).get("ranking", []))
        else:
            sign = policy.direction_of(metric, s.steps, s.values, override=direction)
            fc = policy.fit_and_choose(s.steps.astype(float), s.values, direction=sign,
                                       limits=policy.limits_for(metric), level=level, schedule=schedule)
        loss_fit = None
        loss_name = "train_loss" if "train_loss" in log.series else "eval_loss" if "eval_loss" in log.series else None
        if loss_name == metric or policy.direction_from_name(metric) == -1:
            loss_fit = fc.main_fit
        elif saved is not None and (saved.get("loss_curve") or {}).get("forecaster"):
            lc = saved["loss_curve"]
            loss_fit = CurveForecast.from_dict(lc["forecaster"], lc["fits"]).main_fit
        elif with_loss and loss_name and len(log.series[loss_name]) >= 8:
            ls = log.series[loss_name]
            loss_fit = policy.fit_and_choose(ls.steps.astype(float), ls.values, direction=-1,
                                             limits=policy.limits_for(loss_name), level=level,
                                             schedule=schedule).main_fit
        return cls(metric, fc.direction, fc.fits, fc.whole_fit, fc.reason, loss_fit, fc, level)


# ------------------------------------------------------------------ figure 5: forecast
def _steps_per_hour(log: TrainingLog) -> float | None:
    """Measured training speed (optimizer steps per hour of wall time), when the log has times."""
    if "elapsed_s" in log.series:
        e = log.series["elapsed_s"]
        if len(e) >= 2 and e.values[-1] > e.values[0]:
            return float((e.steps[-1] - e.steps[0]) / (e.values[-1] - e.values[0]) * 3600.0)
    return None


def _forecast_horizon(reach: float | None, last: float) -> float:
    """How far right the forecast panel reaches: 3x the log, or past the target step (at most 50x)."""
    horizon = 3.0 * last
    if reach is not None and reach > last:
        horizon = min(max(horizon, reach * 1.25), 50.0 * last)
    return horizon


def _note_target_reach(ax: Any, fit: Any, target: float, level: float, last: float, per_hour: float | None,
                       fmt: Callable[[float], str], lang: str) -> None:
    """Mark where the forecast reaches ``target`` (with its band and the hours left), or say why it does not."""
    reach = fit.steps_to_reach(target, horizon_factor=policy.HORIZON_FACTOR)
    early, late = fit.steps_to_reach_band(target, level, horizon_factor=policy.HORIZON_FACTOR)
    if reach is not None:
        if early is not None and late is not None:
            ax.axvspan(early, late, color="#000000", alpha=0.06, lw=0)
        ax.axvline(reach, color="#000000", lw=1.5)
        rng_en = rng_zh = ""
        if early is not None and late is not None:
            rng_en = f" ({level:.0%}: {early:,.0f}–{late:,.0f})"
            rng_zh = f"（{level:.0%}：{early:,.0f}–{late:,.0f}）"
        hours_en = hours_zh = ""
        if per_hour and reach > last:
            more = (reach - last) / per_hour
            hours_en = f"\n≈ {more_time(more)} at the measured speed"
            hours_zh = f"\n按实测速度还需约 {more:,.1f} 小时"
        text = block(f"reaches {fmt(target)} at step ≈ {reach:,.0f}{rng_en}{hours_en}",
                     f"约在第 {reach:,.0f} 步达到 {fmt(target)}{rng_zh}{hours_zh}", lang)
        _note(ax, text, loc="center right")
    else:
        asym, asym_at_bound = policy.forecast_asymptote(fit)
        word_en, word_zh = policy.asymptote_word(fit.direction)
        why_en = why_zh = ""
        if asym is not None and not asym_at_bound:
            why_en = f": the fitted {word_en} is {fmt(asym)}"
            why_zh = f"：拟合{word_zh}为 {fmt(asym)}"
        h = f"{policy.HORIZON_FACTOR:g}"
        _note(ax, block(f"{fmt(target)} is not reached within {h}× the logged steps{why_en}",
                        f"在 {h} 倍已记录步数内达不到 {fmt(target)}{why_zh}", lang), loc="center right", warn=True,
              color="#8B1A1A")


def _draw_forecast_backtest(ax_bt: Any, fit: Any, s: Series, metric: str, fmt: Callable[[float], str],
                            ylim: tuple[float, float], lang: str) -> None:
    """The chosen model and the straight line fitted on the first half only, scored on the second half."""
    from bertcurve.curves import fits as curves

    x = s.steps.astype(float)
    direction = fit.direction
    ax_bt.set_title(title("Backtest: fitted on the first half only", "回测：仅用前一半数据拟合", lang))
    cutoff = x[0] + 0.5 * (x[-1] - x[0])
    train = x <= cutoff
    ax_bt.scatter(*thin(x[train], s.values[train]), s=8, color=C_TRAIN, alpha=0.5, lw=0,
                  label=label("used for the fit", "用于拟合", lang))
    ax_bt.scatter(*thin(x[~train], s.values[~train]), s=8, color=C_GREY, alpha=0.35, lw=0,
                  label=label("held back (to predict)", "留出（待预测）", lang))
    grid_bt = np.linspace(max(x[0], 1.0), x[-1], 300)
    limits = fit.limits
    for model, color, style in ((fit.model, C_FIT, "-"), ("linear", C_LINEAR, ":")):
        if model == "linear" and fit.model == "linear":
            continue
        if int(train.sum()) < 6:
            break
        half = curves.fit_curve(model, s.steps[train], s.values[train], direction=direction, limits=limits)
        if not half.converged and curves.MODELS[model].from_knee:
            # The first half may have no knee of its own (or too few points after it): the same
            # family on all of its points stands in, and the legend names it.
            model = curves.MODELS[model].family
            half = curves.fit_curve(model, s.steps[train], s.values[train], direction=direction, limits=limits)
        if not half.converged:
            continue
        err = half.predict(x[~train]) - s.values[~train]
        rmse = float(np.sqrt(np.mean(err ** 2))) if len(err) else float("nan")
        en, zh = _MODEL_WORDS.get(model, (model, model))
        drawn = grid_bt >= fit_start(half)
        ax_bt.plot(grid_bt[drawn], half.predict(grid_bt[drawn]), color=color, lw=2, ls=style,
                   label=label(f"{en}: RMSE on held-back part {fmt(rmse)}", f"{zh}：留出部分 RMSE {fmt(rmse)}", lang))
    ax_bt.axvline(cutoff, color=C_GREY, lw=1, ls="-.")
    # A curve fitted on half the points can shoot off before the first logged step: keep the data in view.
    ax_bt.set_ylim(*ylim)
    ax_bt.set_ylabel(metric_label(metric, lang))
    if is_accuracy(metric):
        _percent(ax_bt)
    ax_bt.legend(loc="lower right" if direction > 0 else "upper right", fontsize=8.5)
    _steps_axis(ax_bt, float(x[-1]), lang)


def forecast(log: TrainingLog, *, lang: str = "both", metric: str | None = None, fit: Any = None,
             target: float | None = None, level: float | None = None,
             what_if: Mapping[str, Any] | None = None) -> Figure:
    """Observed curve, the forecast (the analysis's combination of curve families) and its
    calibrated interval, the target line and the step (with its plausible range) at which the
    forecast reaches it; beside it, a backtest: the leading family fitted on the first half only.

    ``fit``: the :class:`~bertcurve.curves.forecast.CurveForecast` to draw (default: computed as
    ``bertcurve analyze`` does). ``level``: the interval's confidence level (default: the
    forecast's own). ``what_if``: the ``what_if`` block of analysis.json; when it predicts this
    metric, its curve (a new run of that length) and interval are drawn too."""
    lang = check_lang(lang)
    metric = metric or log.default_metric()
    s = log.metric(metric, min_points=6, allow_constant=False)
    if fit is None:
        fit = LogFits.compute(log, metric, with_loss=False, level=level).forecaster
    level = policy.check_level(fit.level if level is None else level)
    if fit is None or not fit.converged:
        raise UserError(f"no learning-curve model could be fitted to {metric} of {log.name}; "
                        "a forecast needs a longer or less noisy log")
    direction = fit.direction
    x = s.steps.astype(float)
    if target is None:
        target = policy.default_target(metric, tail_mean(s.values), direction)
    last = float(x[-1])
    horizon = _forecast_horizon(fit.steps_to_reach(target, horizon_factor=policy.HORIZON_FACTOR), last)
    what_if_curve = _what_if_curve(what_if, metric)
    if what_if_curve is not None:
        horizon = max(horizon, 1.04 * what_if_curve[2])

    fig, axes = new_figure(17, 6.2, 1, 2, width_ratios=[1.7, 1])
    ax, ax_bt = axes[0]
    ax.set_title(title("Forecast from the learning curve", "基于学习曲线的预测", lang))
    ax.scatter(*thin(x, s.values), s=8 if len(x) > 300 else 18, color=C_TRAIN, alpha=0.5, lw=0,
               label=label("observed", "观测值", lang))
    grid = np.linspace(max(x[0], 1.0, fit.start_step), horizon, 600)
    band = fit.interval(grid, level)
    ax.fill_between(grid, band.low, band.high, color=C_FIT, alpha=0.18, lw=0,
                    label=label(f"{level:.0%} forecast interval (calibrated on backtests)",
                                f"{level:.0%} 预测区间（按回测误差校准）", lang))
    inside = grid <= last
    pred = fit.predict(grid)
    ax.plot(grid[inside], pred[inside], color=C_FIT, lw=2.4, label=forecast_label(fit, lang))
    ax.plot(grid[~inside], pred[~inside], color=C_FIT, lw=2.4, ls="--",
            label=label("extrapolation", "外推", lang))
    # The seed extrapolated a straight line; show the analysis's linear fit faintly for contrast.
    lin = fit.fits.get("linear")
    if lin is not None and lin.converged and fit.model != "linear":
        ax.plot(grid, lin.predict(grid), color=C_LINEAR, lw=1.2, ls=":", alpha=0.9,
                label=label("linear extrapolation (the seed's method)", "线性外推（原项目的方法）", lang))
    ax.axvline(last, color=C_GREY, lw=1, ls="-.")
    ax.text(last, 0.01, label(" end of log", " 日志终点", lang), transform=ax.get_xaxis_transform(),
            color=C_GREY, fontsize=9, ha="left", va="bottom")
    fmt = (lambda v: f"{v:.1%}") if is_accuracy(metric) else (lambda v: f"{v:.3g}")
    ax.axhline(target, color="#000000", lw=1.2, ls="--",
               label=label(f"target {fmt(target)}", f"目标 {fmt(target)}", lang))
    _note_target_reach(ax, fit, target, level, last, _steps_per_hour(log), fmt, lang)
    # A level pinned at its bound (e.g. a loss floor at 0) is not an estimate; do not draw it as one.
    asym, asym_at_bound = policy.forecast_asymptote(fit)
    if asym is not None and np.isfinite(asym) and not asym_at_bound:
        word_en, word_zh = policy.asymptote_word(direction)
        ax.axhline(asym, color=C_FIT, lw=1, ls=":")
        ax.text(0.01, asym, label(f"{word_en} {fmt(asym)}", f"{word_zh} {fmt(asym)}", lang), color=C_FIT,
                fontsize=9, transform=ax.get_yaxis_transform(), va="bottom")
    lo_y = min(float(np.nanmin(s.values)), target)
    hi_y = max(float(np.nanmax(s.values)), target)
    if what_if_curve is not None:
        lo_y, hi_y = _draw_what_if(ax, what_if, metric, what_if_curve, fmt, lang, lo_y, hi_y)
    pad = 0.12 * (hi_y - lo_y or 1.0)
    ax.set_ylim(lo_y - pad, hi_y + pad)
    ax.set_xlim(0, horizon)
    ax.set_ylabel(metric_label(metric, lang))
    if is_accuracy(metric):
        _percent(ax)
    # Past the end of the log, below a rising curve (above a falling one), the plot is empty.
    ax.legend(loc="lower right" if direction > 0 else "upper right", fontsize=8.5)
    _steps_axis(ax, horizon, lang)
    _draw_forecast_backtest(ax_bt, fit, s, metric, fmt, ax.get_ylim(), lang)
    _suptitle(fig, "Forecast", "预测", lang, log.name)
    return fig


C_WHAT_IF = "#332288"


def _what_if_curve(what_if: Mapping[str, Any] | None, metric: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(steps, values, max_steps) of the what-if run's predicted curve of ``metric``, if any."""
    if not isinstance(what_if, Mapping) or metric not in (what_if.get("predictions") or {}):
        return None
    points = [(p["step"], p[metric]) for p in what_if.get("curve") or () if metric in p]
    if len(points) < 2:
        return None
    steps, values = np.array(points, dtype=float).T
    return steps, values, int(what_if["max_steps"])


def _draw_what_if(ax: Any, what_if: Mapping[str, Any], metric: str, curve: tuple[np.ndarray, np.ndarray, int],
                  fmt: Callable[[float], str], lang: str, lo_y: float, hi_y: float) -> tuple[float, float]:
    """The schedule-aware answer: the whole predicted curve of a new run and its end with its
    interval. Returns the y-range widened to hold the interval."""
    steps, values, max_steps = curve
    pred = what_if["predictions"][metric]
    low, high = pred["pi"]
    shape = what_if.get("schedule", "")
    ax.plot(steps, values, color=C_WHAT_IF, lw=1.6, ls="-.",
            label=label(f"what-if: a new {shape} run of {max_steps:,} steps (schedule-aware law)",
                        f"假设：新训练 {max_steps:,} 步、{shape} 学习率计划（学习率感知规律）", lang))
    ax.errorbar([max_steps], [pred["value"]], yerr=[[pred["value"] - low], [high - pred["value"]]],
                fmt="D", color=C_WHAT_IF, ms=6, capsize=4, lw=1.4)
    ax.annotate(f"{fmt(pred['value'])} [{fmt(low)}, {fmt(high)}]", (max_steps, pred["value"]),
                textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=9, color=C_WHAT_IF)
    return min(lo_y, low), max(hi_y, high)


# ------------------------------------------------------------------ live overview (dashboard)
def live_overview(logs: Sequence[TrainingLog], *, lang: str = "both", names: Sequence[str] | None = None) -> Figure:
    """A compact 2×2 of one or more runs for the dashboard: MLM accuracy (held-out points and the
    training-batch moving average), loss, learning rate and throughput, one colour per run."""
    lang = check_lang(lang)
    names = [literal(n) for n in (names if names is not None else unique_names(logs))]
    fig, axes = new_figure(13, 7.6, 2, 2)
    ax_acc, ax_loss, ax_lr, ax_tps = axes.flat
    max_step = max((_max_step(log) for log in logs), default=1.0)
    for i, (log, name) in enumerate(zip(logs, names)):
        color = PALETTE[i % len(PALETTE)]
        ser = log.series
        if "train_mlm_accuracy" in ser:
            s = ser["train_mlm_accuracy"]
            ax_acc.plot(s.steps, smooth(s.values)[0], color=color, lw=1.4, alpha=0.6,
                        label=label(f"{name}: training batch (moving avg.)", f"{name}：训练批次（移动平均）", lang))
        if "eval_mlm_accuracy" in ser:
            s = ser["eval_mlm_accuracy"]
            ax_acc.plot(s.steps, s.values, color=color, lw=2, marker="o", ms=3.5,
                        label=label(f"{name}: held-out", f"{name}：验证集", lang))
        if "train_loss" in ser:
            s = ser["train_loss"]
            ax_loss.plot(s.steps, smooth(s.values)[0], color=color, lw=1.4, alpha=0.6,
                         label=label(f"{name}: training", f"{name}：训练", lang))
        if "eval_loss" in ser:
            s = ser["eval_loss"]
            ax_loss.plot(s.steps, s.values, color=color, lw=2, marker="o", ms=3.5,
                         label=label(f"{name}: held-out", f"{name}：验证集", lang))
        if "lr" in ser:
            s = ser["lr"]
            ax_lr.plot(*thin(s.steps, s.values), color=color, lw=1.6, label=name)
        if "tokens_per_s" in ser:
            s = ser["tokens_per_s"]
            ax_tps.plot(s.steps, smooth(s.values)[0], color=color, lw=1.6, label=name)
    for ax, (en, zh), percent in ((ax_acc, ("MLM accuracy", "MLM 准确率"), True),
                                  (ax_loss, ("Loss", "损失"), False),
                                  (ax_lr, ("Learning rate", "学习率"), False),
                                  (ax_tps, ("Throughput (tokens/s)", "吞吐量（词元/秒）"), False)):
        ax.set_title(title(en, zh, lang))
        _steps_axis(ax, max_step, lang)
        if ax.lines:
            if percent:
                _percent(ax)
            ax.legend(loc="best", fontsize=8)
        else:
            _empty(ax, label("not logged yet", "尚无记录", lang))
    return fig


def compute_curve(points: Sequence[Mapping[str, Any]], context: TrainingLog | None, metric: str, *,
                  context_until: float = float("inf"), lang: str = "both") -> Figure:
    """The final held-out metric of several finished runs (WSD cooldown branches) against
    their steps, with ±1 standard error, over the curve of the run they branched from."""
    lang = check_lang(lang)
    fig, axes = new_figure(9, 5.6)
    ax = axes[0][0]
    if context is not None and metric in context.series:
        s = context.series[metric]
        stable = s.steps <= context_until
        ax.plot(*thin(s.steps[stable], s.values[stable]), color="#999999", lw=1.2,
                label=label("stable phase (no cooldown)", "稳定阶段（未退火）", lang))
    steps = np.array([p["step"] for p in points], dtype=float)
    values = np.array([p["value"] for p in points], dtype=float)
    errors = np.array([p.get("se") or 0.0 for p in points], dtype=float)
    ax.errorbar(steps, values, yerr=errors, color=PALETTE[1], marker="o", lw=2, capsize=4,
                label=label("after cooldown (final, ±1 SE)", "退火后（最终值，±1 标准误）", lang))
    for p in points:
        ax.annotate(p["name"], (p["step"], p["value"]), textcoords="offset points", xytext=(4, -12),
                    fontsize=8, color="#333333")
    _steps_axis(ax, float(max(steps.max(), _max_step(context) if context is not None else 0)), lang)
    ax.set_ylabel(metric_label(metric, lang))
    if "accuracy" in metric:
        _percent(ax)
    ax.legend(loc="lower right", fontsize=9)
    _suptitle(fig, "Compute curve: final metric of each cooldown branch", "算力曲线：各退火分支的最终指标", lang)
    return fig


def seed_bands(groups: Sequence[Mapping[str, Any]], metric: str, *, lang: str = "both") -> Figure:
    """Runs that differ only in seed, one colour per configuration: left, each seed's curve (thin)
    and the mean curve with the t interval of the mean across seeds; right, every seed's final
    value and the group mean with its interval.

    ``groups``: mappings with ``name``, ``curves`` (one ``(steps, values)`` per seed), ``band``
    (``steps``, ``mean``, ``low``, ``high``, ``n``, ``level``) and ``final`` (``values``,
    ``mean``, ``ci_low``, ``ci_high``; the intervals None for one seed)."""
    lang = check_lang(lang)
    fig, axes = new_figure(12, 5.4, 1, 2, gridspec_kw={"width_ratios": [2.6, 1]})
    ax, ax_f = axes[0]
    max_step = 1.0
    level = next((g["band"]["level"] for g in groups), 0.95)
    for i, g in enumerate(groups):
        color = PALETTE[i % len(PALETTE)]
        for steps, values in g["curves"]:
            ax.plot(*thin(np.asarray(steps), np.asarray(values)), color=color, lw=0.7, alpha=0.35)
            max_step = max(max_step, float(np.max(steps)))
        b = g["band"]
        n = b["n"]
        ax.plot(b["steps"], b["mean"], color=color, lw=2.0,
                label=f"{literal(g['name'])} " + label(f"(mean of {n} seeds)", f"（{n} 个种子的均值）", lang))
        if n > 1:
            ax.fill_between(b["steps"], b["low"], b["high"], color=color, alpha=0.2, lw=0)
        f = g["final"]
        ax_f.scatter([i] * len(f["values"]), f["values"], color=color, alpha=0.6, s=22, zorder=3)
        if f.get("ci_low") is not None:
            ax_f.errorbar([i + 0.18], [f["mean"]], yerr=[[f["mean"] - f["ci_low"]], [f["ci_high"] - f["mean"]]],
                          color=color, marker="D", capsize=5, lw=2, zorder=4)
        else:
            ax_f.plot([i + 0.18], [f["mean"]], color=color, marker="D", zorder=4)
    _steps_axis(ax, max_step, lang)
    ax.set_ylabel(metric_label(metric, lang))
    ax.set_title(title(f"Mean curve, shaded: {level:.0%} interval of the mean across seeds",
                       f"均值曲线，阴影：跨种子均值的 {level:.0%} 区间", lang), fontsize=10)
    ax.legend(loc="lower right", fontsize=9)
    ax_f.set_xticks(range(len(groups)), [literal(g["name"]) for g in groups], rotation=20, ha="right")
    ax_f.set_xlim(-0.5, len(groups) - 0.5)
    ax_f.set_title(title("Final value of each seed; mean and interval", "各种子的最终值；均值与区间", lang,
                         width=40), fontsize=10)
    if "accuracy" in metric:
        _percent(ax)
        _percent(ax_f)
    _suptitle(fig, "Across seeds: mean curve and spread", "多种子：均值曲线与离散程度", lang)
    return fig

"""The one home of every learning-curve decision that analyze, plot, report, compare and the
dashboard must agree on.

* :func:`direction_of` — whether a metric should grow (+1, accuracy) or fall (-1, loss),
  from its name in any spelling (``eval_loss``, ``EvalLoss``, ``eval/loss``, ``val_loss``,
  ``perplexity``, ``accuracy``), overridable, else from the data;
* :func:`limits_for` — the range a metric can take (accuracies in [0, 1], losses >= 0,
  perplexities >= 1);
* :func:`asymptote` and :func:`asymptote_word` — the level a saturating fit tends to, and
  whether it is a ceiling (a rising metric) or a floor (a falling one);
* :func:`default_target` — the target a forecast answers when none is given;
* :data:`HORIZON_FACTOR` — how far ahead a steps-to-target answer may lie;
* :data:`DEFAULT_LEVEL` and :func:`check_level` — the confidence level of every interval;
* :func:`fit_and_choose` — fit every family, backtest, and build the forecast (see
  :mod:`bertcurve.curves.forecast`).

Pure functions; nothing here reads files or draws.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from bertcurve.curves.fits import FitResult, Limits

from bertcurve.curves.stats import DEFAULT_LEVEL  # noqa: E402  (the confidence level unless --level)

#: A steps-to-target answer is searched up to this multiple of the last logged step;
#: beyond it the answer is "not reached" (no fitted curve is trustworthy that far out).
HORIZON_FACTOR = 100.0

#: Backtest cut-offs, as fractions of the logged step range.
BACKTEST_FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

#: Fewest points of a metric before it is analysed at all.
MIN_POINTS = 5

# Words that say a metric falls with training (lower is better) or grows (higher is better).
_DOWN_WORDS = {"loss", "perplexity", "ppl", "nll", "error", "err", "wer", "cer", "bpb", "bpc", "tel", "trl",
               "logppl", "log_perplexity", "lossy", "mse", "mae", "rmse", "entropy"}
_UP_WORDS = {"accuracy", "acc", "f1", "auc", "bleu", "rouge", "em", "exact_match", "precision", "recall",
             "score", "top1", "top5", "mlm_acc"}


def check_level(level: float) -> float:
    """``level`` itself if it is a usable confidence level (strictly between 0.5 and 1)."""
    from bertcurve.errors import UserError

    if not (isinstance(level, (int, float)) and 0.5 < float(level) < 1):
        raise UserError(f"--level must be between 0.5 and 1, e.g. 0.9 or 0.95 (got {level})")
    return float(level)


def name_words(name: str) -> list[str]:
    """A metric name split into lower-case words: ``EvalLoss``, ``eval/loss``, ``eval-loss`` and
    ``eval_loss`` all give ``["eval", "loss"]``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def direction_from_name(name: str) -> int | None:
    """+1 / -1 when the name says which way is better, None when it does not."""
    words = name_words(name)
    joined = "_".join(words)
    for w in reversed(words):   # the last word is the quantity ("eval_loss", "accuracy_top1")
        if w in _DOWN_WORDS:
            return -1
        if w in _UP_WORDS:
            return 1
    if "loss" in joined or "perplexity" in joined:
        return -1
    if "accuracy" in joined:
        return 1
    return None


def direction_of(name: str, steps: Sequence[float] | None = None, values: Sequence[float] | None = None,
                 *, override: str | int | None = None) -> int:
    """+1 for a metric that should grow with training, -1 for one that should fall.

    ``override`` (``"up"``/``"down"``/±1, the CLI's ``--direction``) wins; then the name; then
    the sign of the Spearman correlation of the values with the steps (rising when undecided).
    """
    if override is not None:
        if override in ("up", 1, "+1"):
            return 1
        if override in ("down", -1, "-1"):
            return -1
        from bertcurve.errors import UserError

        raise UserError(f"--direction must be up or down, not {override!r}")
    by_name = direction_from_name(name)
    if by_name is not None:
        return by_name
    if values is None or len(values) < 3:
        return 1
    from scipy import stats as sps

    x = np.arange(len(values)) if steps is None else np.asarray(steps, dtype=np.float64)
    rho = sps.spearmanr(x, np.asarray(values, dtype=np.float64)).statistic
    return 1 if not np.isfinite(rho) or rho >= 0 else -1


def is_accuracy(name: str) -> bool:
    """A share of correct answers, living in [0, 1]."""
    words = name_words(name)
    return any(w in {"accuracy", "acc", "top1", "top5"} for w in words) or "accuracy" in "_".join(words)


def is_perplexity(name: str) -> bool:
    words = name_words(name)
    return "perplexity" in words or "ppl" in words


def limits_for(name: str) -> Limits:
    """Accuracies live in [0, 1]; perplexities are >= 1; losses, learning rates and norms >= 0;
    other metrics are free."""
    if is_accuracy(name):
        return Limits(0.0, 1.0)
    if is_perplexity(name) and not any(w in {"log", "logppl"} for w in name_words(name)):
        return Limits(1.0, None)
    words = set(name_words(name))
    if words & {"loss", "nll", "lr", "norm", "perplexity", "tel", "trl", "mse", "mae", "rmse", "entropy"} \
            or "loss" in "_".join(words):
        return Limits(0.0, None)
    return Limits()


def asymptote(fit: FitResult | None) -> float | None:
    """The level a saturating fit tends to (``a`` of the power law and exponential, ``L`` of the
    logistic), looked up by parameter name; None for unbounded families or no fit."""
    if fit is None or not fit.converged:
        return None
    names = list(fit.param_names)
    key = "L" if fit.family == "logistic_log" else "a" if fit.family in ("power_law", "exp_saturation") else None
    if key is None or key not in names:
        return None
    value = float(fit.params[names.index(key)])
    return value if math.isfinite(value) else None


def forecast_asymptote(fc) -> tuple[float | None, bool]:
    """The level a combined forecast tends to, and whether it is undetermined (on a bound): the
    weighted mean of its families' asymptotes when every family that carries weight saturates;
    (None, False) when any weighted family keeps rising or falling for ever."""
    weighted = {m: w for m, w in fc.weights.items() if w >= 0.01}
    if not weighted:
        return None, False
    if any(m not in fc.fits for m in weighted):
        return None, False    # the schedule law's level depends on the schedule, not a single asymptote
    levels = {m: asymptote(fc.fits[m]) for m in weighted}
    if any(v is None for v in levels.values()):
        return None, False
    total = sum(weighted.values())
    level = sum(weighted[m] * levels[m] for m in weighted) / total
    return float(level), any(asymptote_at_bound(fc.fits[m]) for m in weighted)


def asymptote_at_bound(fit: FitResult | None) -> bool:
    """The fitted asymptote sits on the edge of its allowed range: the data do not pin it down."""
    return bool(fit is not None and set(fit.at_bounds) & {"a", "L"})


def asymptote_word(direction: int) -> tuple[str, str]:
    """("ceiling", "上限") for a rising metric, ("floor", "下限") for a falling one."""
    return ("ceiling", "上限") if direction > 0 else ("floor", "下限")


def default_target(name: str, last: float, direction: int) -> float:
    """The target a forecast answers when none is given: for an accuracy the next multiple of 5
    points beyond the (smoothed) last value; for other metrics 10 % better than it."""
    if is_accuracy(name):
        if direction > 0:
            return float(min(1.0, np.floor(last * 20 + 1e-9) / 20 + 0.05))
        return float(max(0.0, np.ceil(last * 20 - 1e-9) / 20 - 0.05))
    return float(last * (0.9 if direction < 0 else 1.1)) if last else 1.0


def fit_and_choose(steps: np.ndarray, values: np.ndarray, *, direction: int, limits: Limits = Limits(),
                   level: float = DEFAULT_LEVEL, fractions: Sequence[float] = BACKTEST_FRACTIONS,
                   schedule: Sequence[float] | None = None):
    """Fit every family, backtest them, and build the forecast every verb uses.

    ``schedule`` is the run's planned learning rate per optimizer step (0..N), when known: the
    schedule-aware law then joins the candidates. Returns a
    :class:`bertcurve.curves.forecast.CurveForecast`.
    """
    from bertcurve.curves.forecast import build_forecast

    return build_forecast(steps, values, direction=direction, limits=limits, level=level, fractions=fractions,
                          schedule=schedule)

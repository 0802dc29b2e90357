"""What would N steps buy? The schedule-aware law applied to one training log.

``bertcurve analyze RUN --what-if-steps N [--what-if-schedule SHAPE]`` lands here: fit
:mod:`bertcurve.curves.schedule_law` to the run's held-out loss (and accuracy) against its
learning rate, then predict a new run with the same settings and N steps: the same warm-up
and peak rate, the decay stretched to N (or another decay shape). The law assumes the same
data, batch size, model and peak learning rate; only the length and the decay shape change.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bertcurve.curves import policy
from bertcurve.curves import schedule_law as law
from bertcurve.curves.logs import TrainingLog
from bertcurve.errors import UserError

SHAPES = ("cosine", "linear", "constant", "wsd")
# the held-out metrics, else the training ones (the seed logged only its training batches)
LOSSES = ("eval_loss", "train_loss")
ACCURACIES = ("eval_mlm_accuracy", "train_mlm_accuracy")
CURVE_POINTS = 60           # points of the predicted curve kept in analysis.json
BOOTSTRAP = 100


def _bounds(name: str) -> tuple[float | None, float | None]:
    limits = policy.limits_for(name)
    return limits.lower, limits.upper


LOSS_BOUNDS = _bounds("eval_loss")
ACCURACY_BOUNDS = _bounds("eval_mlm_accuracy")


def _planned_optim(log: TrainingLog) -> dict | None:
    """The optimizer settings of a bertcurve run's config.json, when the log has them."""
    config = log.meta.get("config") if isinstance(log.meta, dict) else None
    train = config.get("train") if isinstance(config, dict) else None
    optim = train.get("optim") if isinstance(train, dict) else None
    return optim if isinstance(optim, dict) and {"lr", "warmup_steps", "max_steps"} <= set(optim) else None


def planned_schedule(log: TrainingLog) -> np.ndarray | None:
    """The learning rate the run planned for every optimizer step 0..max_steps (from its
    config), or None when the log does not say what the rest of its schedule would be."""
    optim = _planned_optim(log)
    if optim is None:
        return None
    from bertcurve.training.schedule import rates_per_step

    return np.array(rates_per_step(optim))


def lr_per_step(log: TrainingLog) -> tuple[np.ndarray, str, str]:
    """The run's learning rate at every step, its decay shape, and where both came from.

    A bertcurve run's config gives the exact schedule; other logs need a logged ``lr``.
    """
    optim = _planned_optim(log)
    if optim is not None:
        return planned_schedule(log), str(optim.get("schedule", "cosine")), "the run's config"
    series = log.series.get("lr")
    if series is None or len(series) < 3:
        raise UserError(
            f"{log.path}: --what-if-steps needs the learning rate of every logged step (an 'lr' "
            f"or 'learning_rate' column); this log has none, so a schedule-aware forecast is impossible")
    last = int(max([series.last_step] + [log.series[n].last_step for n in LOSSES if n in log.series]))
    rates = law.lr_from_log(series.steps, series.values, last)
    return rates, infer_shape(rates), "the logged learning rate"


def infer_shape(rates: np.ndarray) -> str:
    """The decay shape (of :data:`SHAPES`) closest to a logged schedule after its peak."""
    if rates[-1] >= 0.99 * rates.max():
        return "constant"    # never decayed: every decay template would coincide with it
    best, best_err = "cosine", math.inf
    last = len(rates) - 1
    for shape in SHAPES:
        try:
            template = law.stretched_schedule(rates, last, shape)
        except ValueError:
            continue
        err = float(np.mean((template - rates) ** 2))
        if err < best_err:
            best, best_err = shape, err
    return best


def _points(log: TrainingLog, names: tuple[str, ...]) -> tuple[str, np.ndarray, np.ndarray] | None:
    """The first of ``names`` the log has with enough points: (name, steps, values)."""
    for name in names:
        series = log.series.get(name)
        if series is not None and len(series) >= law.MIN_POINTS:
            keep = series.steps >= 1
            return name, series.steps[keep].astype(int), series.values[keep]
    return None


def what_if(log: TrainingLog, max_steps: int, shape: str | None = None,
            level: float = policy.DEFAULT_LEVEL) -> dict[str, Any]:
    """The ``what_if`` block of analysis.json (see docs/what-if.md)."""
    level = policy.check_level(level)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise UserError(f"--what-if-steps must be a positive whole number of steps (got {max_steps!r})")
    if shape is not None and shape not in SHAPES:
        raise UserError(f"--what-if-schedule must be one of {', '.join(SHAPES)} (got {shape!r})")
    rates, run_shape, rate_source = lr_per_step(log)
    shape = shape or run_shape
    if shape not in SHAPES:
        raise UserError(f"the run's {shape} schedule cannot be stretched to another length; choose the "
                        f"decay of the predicted run with --what-if-schedule ({', '.join(SHAPES)})")
    found = _points(log, LOSSES)
    if found is None:
        raise UserError(f"{log.path}: --what-if-steps needs at least {law.MIN_POINTS} loss values "
                        f"({' or '.join(LOSSES)}); evaluate more often (train --eval-every)")
    loss_name, *loss = found
    if max_steps <= int(np.argmax(rates)):
        raise UserError(f"--what-if-steps {max_steps:,} ends inside the warm-up; give more steps")
    final, final_note = _decay_end(log, rates, run_shape, shape)
    new_rates = law.stretched_schedule(rates, max_steps, shape, final=final)
    steps, values = loss
    steps = np.asarray(steps)
    try:
        loss_fit = law.fit_law(steps, values, rates, bootstrap=BOOTSTRAP, bounds=LOSS_BOUNDS)
    except ValueError as exc:
        raise UserError(f"{log.path}: the schedule law could not be fitted ({exc})") from None
    held_out = loss_name.startswith("eval")
    shape_changed = shape != run_shape
    loss_pred = _prediction(loss_fit, steps, values, rates, new_rates, max_steps, level, held_out,
                            shape_changed, LOSS_BOUNDS)
    curve_steps = np.unique(np.linspace(1, max_steps, CURVE_POINTS).astype(int))
    fitted_last = float(steps.max())
    curve = {loss_name: law.predict_planned(loss_fit, new_rates, curve_steps, fitted_last)}
    predictions = {loss_name: loss_pred}
    fits = {loss_name: loss_fit.as_dict()}
    accuracy_method = None
    found = _points(log, ACCURACIES)
    if found is not None:
        acc_name, *acc = found
        acc_pred, acc_curve, accuracy_method, acc_fit = _accuracy(
            log, acc, loss, rates, new_rates, max_steps, curve_steps, level, shape_changed, loss_fit, held_out)
        predictions[acc_name] = acc_pred
        curve[acc_name] = acc_curve
        fits[acc_name] = acc_fit
    notes = [f"learning rate from {rate_source}; the run's decay shape is {run_shape}"]
    if final_note:
        notes.append(final_note)
    if not loss_name.startswith("eval"):
        notes.append("no held-out evaluations: the law was fitted to the training-batch metrics, "
                     "which are noisier and measured on training data")
    if not loss_fit.annealing_seen:
        notes.append("the run never lowered its learning rate, so the gain of a decay is unknown to the law: "
                     "for a decaying schedule the prediction takes half of the range between no gain and the "
                     "law's limit L0 (scaled by how far the rate falls), and the interval spans the whole range")
    return {
        "max_steps": int(max_steps), "schedule": shape, "law": law.LAW_NAME, "level": level,
        "predictions": predictions, "fits": fits, "accuracy_method": accuracy_method,
        "assumptions": "same data, batch size, model and peak learning rate; only the length and decay change",
        "curve": [{"step": int(s), **{k: float(v[i]) for k, v in curve.items()}} for i, s in enumerate(curve_steps)],
        "notes": notes,
    }


def _decay_end(log: TrainingLog, rates: np.ndarray, run_shape: str, shape: str) -> tuple[float | None, str | None]:
    """The rate a decay of the predicted run ends at, when the run never decayed (its last rate is
    its peak, which a stretched decay would keep): the min_lr_ratio of its config, else 0 (the usual
    end of a cosine or linear decay). None (the run's own last rate) otherwise; and a note."""
    if run_shape != "constant" or shape == "constant":
        return None, None
    optim = _planned_optim(log)
    ratio = float(optim.get("min_lr_ratio", 0.0)) if optim is not None else 0.0
    source = "the min_lr_ratio of the run's config" if optim is not None else "0, the usual end of a decay"
    return ratio * float(np.max(rates)), (f"the run never decayed: the predicted {shape} decay ends at "
                                          f"{ratio:g} x the peak rate ({source})")


def _prediction(fit: law.LawFit, steps, values, rates, new_rates, at: int, level: float, held_out: bool,
                shape_changed: bool, bounds: tuple[float | None, float | None]) -> dict:
    """Value and interval at step ``at``. A held-out evaluation's interval includes its
    measurement noise; a training-batch metric's is for the curve (the mean over batches),
    since a single batch's value is not what anyone asks about."""
    got = law.forecast_at(fit, steps, values, rates, new_rates, at, level=level, observation=held_out,
                          shape_changed=shape_changed, bounds=bounds)
    return {"value": got.value, "pi": [got.low, got.high]}


def _clip(pi: list[float], bounds: tuple[float | None, float | None]) -> list[float]:
    low = -math.inf if bounds[0] is None else bounds[0]
    high = math.inf if bounds[1] is None else bounds[1]
    return [min(max(v, low), high) for v in pi]


def _accuracy(log, acc, loss, rates, new_rates, max_steps, curve_steps, level, shape_changed, loss_fit, held_out):
    """Accuracy at N: the law fitted to accuracy directly, or the loss prediction mapped through
    the run's own loss-accuracy relation; whichever predicted the run's last tenth better
    from its first part (backtest) is used."""
    steps, values = acc
    direct_fit = None
    try:
        direct_fit = law.fit_law(steps, values, rates, rising=True, bootstrap=BOOTSTRAP, bounds=ACCURACY_BOUNDS)
    except ValueError:
        pass
    relation = loss_accuracy_relation(loss, acc)
    direct_err = (law.backtest_error(steps, values, rates, rising=True, bounds=ACCURACY_BOUNDS)
                  if direct_fit else None)
    mapped_err = _mapped_backtest(loss, acc, rates)
    use_direct = direct_fit is not None and (
        mapped_err is None or relation is None
        or (direct_err is not None and abs(direct_err[0]) <= abs(mapped_err[0])))
    if use_direct:
        pred = _prediction(direct_fit, steps, values, rates, new_rates, max_steps, level, held_out,
                           shape_changed, ACCURACY_BOUNDS)
        curve = law.predict_planned(direct_fit, new_rates, curve_steps, float(np.max(steps)))
        return pred, curve, "law fitted to accuracy (smaller backtest error)", direct_fit.as_dict()
    if relation is None:
        raise UserError(f"{log.path}: the schedule law fits neither the accuracy nor its relation to the loss")
    slope, intercept = relation
    loss_pred = _prediction(loss_fit, *loss, rates, new_rates, max_steps, level, held_out, shape_changed,
                            LOSS_BOUNDS)
    mapped_extra = abs(mapped_err[0]) if mapped_err else 0.0
    ends = sorted(intercept + slope * np.asarray(loss_pred["pi"]))
    value = intercept + slope * loss_pred["value"]
    half = max(value - ends[0], ends[1] - value)
    half = math.hypot(half, 1.96 * mapped_extra)
    curve = intercept + slope * law.predict_planned(loss_fit, new_rates, curve_steps, float(np.max(loss[0])))
    return ({"value": float(value), "pi": _clip([float(value - half), float(value + half)], ACCURACY_BOUNDS)}, curve,
            "held-out loss predicted by the law, mapped to accuracy through the run's own "
            "loss-accuracy line (smaller backtest error)",
            {"relation": {"slope": slope, "intercept": intercept}})


def loss_accuracy_relation(loss, acc) -> tuple[float, float] | None:
    """accuracy = intercept + slope * loss, fitted on the later half of the shared evaluations
    (the end of the curve is what a longer run extends)."""
    common, li, ai = np.intersect1d(loss[0], acc[0], return_indices=True)
    if len(common) < law.MIN_POINTS:
        return None
    half = len(common) // 2
    x, y = loss[1][li][half:], acc[1][ai][half:]
    if np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    if slope >= 0:      # a lower loss must mean a higher accuracy
        return None
    return float(slope), float(intercept)


def _mapped_backtest(loss, acc, rates) -> tuple[float, float] | None:
    """Backtest of the mapped route: loss law and relation from the first 60 %, accuracy at the end."""
    steps = loss[0]
    cutoff = steps.min() + 0.6 * (steps.max() - steps.min())
    first = steps <= cutoff
    first_acc = acc[0] <= cutoff
    relation = loss_accuracy_relation((loss[0][first], loss[1][first]), (acc[0][first_acc], acc[1][first_acc]))
    if relation is None or first.sum() < law.MIN_POINTS + 2:
        return None
    try:
        fit = law.fit_law(loss[0][first], loss[1][first], rates, bootstrap=0, bounds=LOSS_BOUNDS)
    except ValueError:
        return None
    tail = acc[0] >= acc[0].max() - 0.1 * (acc[0].max() - acc[0].min())
    predicted_loss = law.predict_planned(fit, rates, acc[0][tail], float(loss[0][first].max()))
    predicted = relation[1] + relation[0] * predicted_loss
    return float(predicted.mean() - acc[1][tail].mean()), float(acc[0][tail].mean() - cutoff)

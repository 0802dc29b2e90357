"""Pure statistics of runs that differ only in their random seed.

A seed changes the initial weights, the masks and the order of the batches, so
one run's final accuracy is one draw from a distribution; two configurations are
only told apart by a difference larger than that spread. These functions take
plain arrays (one curve per seed) and return frozen results: the mean curve on
the steps every seed evaluated, its across-seed band, the spread of the final
value (mean, SD, SE, a t interval) and the difference between two groups of
seeds with a Welch t interval. Used by ``bertcurve compare`` and ``report``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as sps

from bertcurve.curves.stats import DEFAULT_LEVEL


@dataclass(frozen=True)
class Spread:
    """The final values of ``n`` seeds: mean, sample SD (ddof=1), SE = SD/√n, and the
    t interval of the mean at ``level`` (SD, SE and interval are None for one seed)."""

    n: int
    mean: float
    sd: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    level: float
    values: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SeedBand:
    """The mean curve of several seeds on common steps, with the across-seed SD and the
    t interval of the mean at each step (``low``/``high``; equal to the mean for one seed)."""

    steps: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int
    level: float

    def to_dict(self) -> dict:
        return {"n": self.n, "level": self.level, "steps": self.steps.tolist(), "mean": self.mean.tolist(),
                "sd": self.sd.tolist(), "low": self.low.tolist(), "high": self.high.tolist()}


@dataclass(frozen=True)
class Difference:
    """``b.mean - a.mean`` with its standard error, Welch degrees of freedom and t interval.

    ``within_noise`` is True when the interval contains 0: the seeds' spread does not tell the
    two configurations apart. ``pooled_from`` says where the seed noise came from when a group
    has one seed (the other group's SD, assuming equal spread); None when both have two or more.
    """

    difference: float
    se: float | None
    df: float | None
    ci_low: float | None
    ci_high: float | None
    level: float
    within_noise: bool | None
    pooled_from: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def _t(level: float, df: float) -> float:
    return float(sps.t.ppf(0.5 + level / 2.0, df))


def spread(values: Sequence[float], level: float = DEFAULT_LEVEL) -> Spread:
    """Mean, SD, SE and t interval of one value per seed (NaNs are an error, not dropped)."""
    _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("spread needs one value per seed")
    if not np.all(np.isfinite(x)):
        raise ValueError("spread got a non-finite value")
    n, mean = int(x.size), float(x.mean())
    if n < 2:
        return Spread(n, mean, None, None, None, None, level, tuple(x.tolist()))
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    half = _t(level, n - 1) * se
    return Spread(n, mean, sd, se, mean - half, mean + half, level, tuple(x.tolist()))


def common_steps(step_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Steps at which every curve can be read: the union of their steps inside the range all of
    them cover (between the largest first step and the smallest last step).

    Seeds of one configuration usually evaluate at the same steps, and then this is those
    steps; a run that stopped early shortens the range instead of being extrapolated.
    """
    if not step_arrays:
        raise ValueError("common_steps needs at least one curve")
    arrays = [np.asarray(s, dtype=np.float64) for s in step_arrays]
    if any(a.size == 0 for a in arrays):
        raise ValueError("common_steps got an empty curve")
    lo = max(float(a.min()) for a in arrays)
    hi = min(float(a.max()) for a in arrays)
    if lo > hi:
        return np.empty(0)
    union = np.unique(np.concatenate(arrays))
    return union[(union >= lo) & (union <= hi)]


def on_steps(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """One curve read at ``grid`` by linear interpolation between its own points (exact at its
    own steps). ``grid`` must lie inside the curve's range."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    g = np.asarray(grid, dtype=np.float64)
    if g.size and (g.min() < s[0] or g.max() > s[-1]):
        raise ValueError("on_steps: the grid reaches outside the curve; use common_steps")
    return np.interp(g, s, v)


def band(curves: Sequence[tuple[np.ndarray, np.ndarray]], level: float = DEFAULT_LEVEL) -> SeedBand:
    """Mean curve of ``curves`` (one ``(steps, values)`` per seed) on their common steps, with
    the across-seed SD and the t interval of the mean at every step."""
    _check_level(level)
    if not curves:
        raise ValueError("band needs at least one curve")
    grid = common_steps([c[0] for c in curves])
    if grid.size == 0:
        raise ValueError("the curves share no range of steps")
    matrix = np.vstack([on_steps(s, v, grid) for s, v in curves])
    n = matrix.shape[0]
    mean = matrix.mean(axis=0)
    if n < 2:
        zero = np.zeros_like(mean)
        return SeedBand(grid, mean, zero, mean.copy(), mean.copy(), n, level)
    sd = matrix.std(axis=0, ddof=1)
    half = _t(level, n - 1) * sd / math.sqrt(n)
    return SeedBand(grid, mean, sd, mean - half, mean + half, n, level)


def difference(a: Spread, b: Spread) -> Difference:
    """``b - a`` in mean final value, judged against the seeds' spread (Welch's t interval).

    With one seed on one side its variance is taken to be the other side's (the seed noise
    of a configuration does not depend much on its settings); with one seed on both sides
    there is no spread to judge against and only the difference is returned.
    """
    if a.level != b.level:
        raise ValueError("difference needs two spreads at the same level")
    diff = b.mean - a.mean
    if a.sd is None and b.sd is None:
        return Difference(diff, None, None, None, None, a.level, None)
    pooled_from = None
    var_a = a.sd ** 2 if a.sd is not None else None
    var_b = b.sd ** 2 if b.sd is not None else None
    if var_a is None:
        var_a, pooled_from = var_b, "b"
    if var_b is None:
        var_b, pooled_from = var_a, "a"
    qa, qb = var_a / a.n, var_b / b.n
    se = math.sqrt(qa + qb)
    if pooled_from is None:
        # Welch–Satterthwaite; a zero-variance pair (identical values) keeps the larger df.
        denom = (qa ** 2 / (a.n - 1) if qa else 0.0) + (qb ** 2 / (b.n - 1) if qb else 0.0)
        df = (qa + qb) ** 2 / denom if denom > 0 else float(a.n + b.n - 2)
    else:
        df = float((b if pooled_from == "b" else a).n - 1)
    if se == 0.0:
        return Difference(diff, 0.0, df, diff, diff, a.level, diff == 0.0, pooled_from)
    half = _t(a.level, df) * se
    low, high = diff - half, diff + half
    return Difference(diff, se, df, low, high, a.level, bool(low <= 0.0 <= high), pooled_from)


def describe_difference(name_a: str, name_b: str, d: Difference) -> str:
    """One line: ``wsd vs cosine: +0.0040 ± 0.0061 (95 % t interval, SE 0.0019) — within seed noise``."""
    head = f"{name_b} vs {name_a}: {d.difference:+.4f}"
    if d.se is None:
        return head + " (one seed each: no seed spread to judge the difference against)"
    half = (d.ci_high - d.difference) if d.ci_high is not None else 0.0
    verdict = "within seed noise" if d.within_noise else "larger than seed noise"
    pooled = "; one side has one seed, its spread taken from the other" if d.pooled_from else ""
    return (f"{head} ± {half:.4f} ({d.level:.0%} t interval, SE {d.se:.4f}, df {d.df:.1f}{pooled}) "
            f"— {verdict}")

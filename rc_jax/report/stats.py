"""Statistics and verdict rules of the report (margins come from `configs/report.py`).

Layer reduction: a signature "appears in some layer", so each per-layer metric is reduced over
layers in the direction the signature predicts — the max for metrics the signature raises
(concentration, stratification), the min for those it lowers (effective rank, entropy). Trained
models and their nulls are reduced alike.

Paired comparison over seeds (`compare`): for seed s, `d_s = t_s - n_s` (or `(t_s - n_s) / |n_s|`
when relative), signed by the predicted direction; `mean(d) +- t_{conf, n-1} sd(d) / sqrt(n)` is a
one-sided confidence bound. Outcome:

  yes           the lower bound is above 0 and the mean is beyond the margin
  no            the upper bound is below the margin (the effect is absent or smaller than the margin)
  inconclusive  neither (too few defined seeds, or a spread too large to tell)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rc_jax import onsets as onsets_lib

# +1: the signature raises the metric; -1: it lowers it
DIRECTIONS = {
    "effective_rank": -1, "effective_rank_routed": -1, "rank_collapse_residual": -1,
    "rank_collapse_residual_routed": -1, "routing_entropy": -1,
}

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"

# one-sided Student t quantiles by degrees of freedom, for 0.95 and 0.975
_T = {0.95: {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860,
             9: 1.833, 10: 1.812, 15: 1.753, 20: 1.725, 30: 1.697, math.inf: 1.645},
      0.975: {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
              9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042, math.inf: 1.960}}


def direction(metric: str) -> int:
  return DIRECTIONS.get(metric, 1)


def reduce_layers(metric: str, values_RxL: np.ndarray) -> np.ndarray:
  """`[R, L] -> [R]`: NaN-ignoring max over layers (min for metrics the signature lowers)."""
  values = np.asarray(values_RxL, np.float64)
  defined = ~np.isnan(values)
  fill = -np.inf if direction(metric) > 0 else np.inf
  reduced = (np.max if direction(metric) > 0 else np.min)(np.where(defined, values, fill), axis=-1)
  return np.where(defined.any(axis=-1), reduced, np.nan)


def t_quantile(df: int, confidence: float) -> float:
  """One-sided Student t quantile (the nearest tabulated df at or below `df`)."""
  table = _T[confidence]
  return table[max(k for k in table if k <= df)]


def compare(trained: Sequence[float | None], null: Sequence[float | None], *, direction: int,
            margin: float, relative: bool = False, confidence: float = 0.95) -> dict:
  """Paired comparison (module docstring) of per-seed values; None/NaN pairs are dropped."""
  if len(trained) != len(null):   # a sweep not run (or of another grid): nothing to pair
    trained, null = [], []
  t = np.array([np.nan if v is None else v for v in trained], np.float64)
  n = np.array([np.nan if v is None else v for v in null], np.float64)
  ok = np.isfinite(t) & np.isfinite(n)
  if relative:
    ok &= np.abs(n) > 0
  t, n = t[ok], n[ok]
  result = {"n": int(ok.sum()), "trained": _mean(t), "trained_sd": _sd(t), "null": _mean(n),
            "null_sd": _sd(n), "effect": math.nan, "bound": math.nan, "outcome": INCONCLUSIVE}
  if result["n"] < 2:
    return result
  diff = direction * ((t - n) / np.abs(n) if relative else t - n)
  effect = float(np.mean(diff))
  half = t_quantile(len(diff) - 1, confidence) * float(np.std(diff, ddof=1)) / math.sqrt(len(diff))
  result.update(effect=effect, bound=half)
  if effect - half > 0 and effect > margin:
    result["outcome"] = YES
  elif effect + half < margin:
    result["outcome"] = NO
  return result


def all_of(outcomes: Sequence[str]) -> str:
  """yes if every outcome is yes, no if any is no, else inconclusive."""
  if outcomes and all(o == YES for o in outcomes):
    return YES
  return NO if any(o == NO for o in outcomes) else INCONCLUSIVE


def onset_median(onsets: Sequence[float | None], budget: float) -> float:
  """Kaplan-Meier median onset (`rc_jax.onsets`), runs without an onset censored at the budget;
  inf when it is not reached (at least half of the runs never collapsed)."""
  if not onsets:
    return math.nan
  observed = [v is not None and math.isfinite(v) for v in onsets]
  times = [float(v) if seen else float(budget) for v, seen in zip(onsets, observed)]
  result = onsets_lib.median(onsets_lib.kaplan_meier(times, observed))
  return result.value if result.reached else math.inf


def onset_progression(brakes: Sequence[float], onsets_by_brake: Sequence[Sequence[float | None]],
                      budget: float, min_fraction: float = 0.5) -> dict:
  """Claim 2's rule on one sweep: does the brake move the onset early -> late -> never?

  With `m_b` the censored median onset at brake b (brakes ascending), `f_b` the share of seeds with
  an onset:
    inconclusive  no onset at the smallest brake (`f < min_fraction`): nothing for the brake to move
    yes           `m_b` is non-decreasing in the brake, some brake's median is later than the first one's, and the largest brake has no onset
                  (`f < min_fraction`) within the budget
    no            otherwise (the brake does not move the onset across its range)
  """
  order = np.argsort(brakes)
  brakes = [float(brakes[i]) for i in order]
  medians = [onset_median(onsets_by_brake[i], budget) for i in order]
  fractions = [float(np.mean([v is not None and math.isfinite(v) for v in onsets_by_brake[i]]))
               for i in order]
  result = {"brakes": brakes, "medians": medians, "fractions": fractions}
  if fractions[0] < min_fraction:
    return dict(result, outcome=INCONCLUSIVE, reason="no onset at the smallest brake")
  monotone = all(b >= a for a, b in zip(medians, medians[1:]))
  later = any(m > medians[0] for m in medians[1:])
  never = fractions[-1] < min_fraction
  outcome = YES if monotone and later and never else NO
  reasons = [text for ok, text in ((monotone, "onset not monotone in the brake"),
                                   (later, "no brake delays the onset"),
                                   (never, "the largest brake does not prevent it")) if not ok]
  return dict(result, outcome=outcome, reason="; ".join(reasons))


def _mean(x: np.ndarray) -> float:
  return float(np.mean(x)) if len(x) else math.nan


def _sd(x: np.ndarray) -> float:
  return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan

"""Statistics and verdict rules of the report (margins come from `configs/report.py`).

Layer reduction (`reduce_layers`, the one every table, figure and verdict uses): a signature
"appears in some layer", so `signature_reduce` reduces each per-layer metric over layers in the
direction the signature predicts — the max for metrics the signature raises (concentration,
stratification), the min for those it lowers (effective rank, entropy). Trained models and their
nulls are reduced alike.

Paired comparison over seeds (`compare`): for seed s, `d_s = t_s - n_s` (or, relative,
`(t_s - n_s) / max(|n_s|, floor)`: a null near 0 is floored, so an effect on a null that is zero by
construction is an absolute difference scaled by the floor, never 1e3-1e6), signed by the predicted
direction; `mean(d) +- t_{conf, n-1} sd(d) / sqrt(n)` is a one-sided confidence bound (Student t
quantile from scipy). Outcome:

  yes           the lower bound is above 0 and the mean is beyond the margin
  no            the upper bound is below the margin (the effect is absent or smaller than it)
  inconclusive  neither (too few defined seeds, or a spread too large to tell)

Power: `minimum_detectable_effect` is the smallest true mean difference the one-sided paired t test
detects with the stated power at the observed spread (noncentral t, scipy).

Onsets: `onset_trend` tests claim 2 as stated — the onset step increases with the brake — by
Kendall's tau-b between brake and onset time over runs, one-sided (scipy). Runs without an onset are
censored at the common budget, so they rank after every observed onset and tie with each other,
which is exact for a common censoring time; runs censored earlier (diverged) and pre-existing runs
(concentrated before training) have no comparable onset time and are left out (counted). Onsets are
read on the logged steps, so onsets at one logged step happened somewhere in the interval before
it and tie: when every run's onset is at the same step (at the preset's resolution, typically the
first measurement), the log interval hides any delay and the test cannot answer (inconclusive,
never *no*); each row counts its onsets at the first measurement.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from rc_jax.measurement import onsets as onsets_lib

# +1: the signature raises the metric; -1: it lowers it
DIRECTIONS = {
    "effective_rank": -1, "effective_rank_routed": -1, "rank_collapse_residual": -1,
    "rank_collapse_residual_routed": -1, "routing_entropy": -1,
}

YES, NO, INCONCLUSIVE = "yes", "no", "inconclusive"


def direction(metric: str) -> int:
  return DIRECTIONS.get(metric, 1)


LAYER_REDUCTIONS = ("max", "mean", "min")
# the reductions an onset definition may use (`metrics.onset_layer_reduce`): the onset metric rises
ONSET_LAYER_REDUCTIONS = ("max", "mean")


def reduce_layers(values: np.ndarray, layer_reduce: str | int) -> np.ndarray:
  """Reduces a per-layer metric `[..., L]` to `[...]`: NaN-ignoring "max" / "mean" / "min", or a
  layer index. All-NaN layers give NaN (without a warning)."""
  values = np.asarray(values, np.float64)
  if isinstance(layer_reduce, (int, np.integer)) and not isinstance(layer_reduce, bool):
    return values[..., int(layer_reduce)]
  if layer_reduce not in LAYER_REDUCTIONS:
    raise ValueError(f"layer_reduce must be one of {LAYER_REDUCTIONS} or a layer index, "
                     f"got {layer_reduce!r}")
  reduce = {"max": np.nanmax, "mean": np.nanmean, "min": np.nanmin}[layer_reduce]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return reduce(values, axis=-1)


def signature_reduce(metric: str, values: np.ndarray) -> np.ndarray:
  """`[..., L] -> [...]` in the direction the signature predicts: the max over layers, the min for
  metrics the signature lowers (`direction`)."""
  return reduce_layers(values, "max" if direction(metric) > 0 else "min")


def t_quantile(df: int, confidence: float) -> float:
  """One-sided Student t quantile `t_{confidence, df}`."""
  return float(scipy_stats.t.ppf(confidence, df))


def minimum_detectable_effect(sd: float, n: int, confidence: float = 0.95,
                              power: float = 0.8) -> float:
  """Smallest true mean paired difference a one-sided t test at `confidence` detects with
  probability `power`, for `n` pairs whose differences have standard deviation `sd`.

  Solves `P(T > t_{confidence, n-1}) = power` for `T` noncentral t with `n - 1` degrees of freedom
  and noncentrality `delta sqrt(n) / sd`. NaN for `n < 2` or an undefined `sd`; 0 when `sd == 0`.
  """
  if n < 2 or not math.isfinite(sd):
    return math.nan
  if sd == 0:
    return 0.0
  df = n - 1
  critical = t_quantile(df, confidence)
  power_at = lambda nc: scipy_stats.nct.sf(critical, df, nc) - power
  noncentrality = optimize.brentq(power_at, 0.0, 100.0)
  return float(noncentrality * sd / math.sqrt(n))


def compare(trained: Sequence[float | None], null: Sequence[float | None], *, direction: int,
            margin: float, relative: bool = False, floor: float = 0.0, confidence: float = 0.95,
            power: float = 0.8) -> dict:
  """Paired comparison (module docstring) of per-seed values; None/NaN pairs are dropped.

  Returns `n`, `trained` / `null` (means) and their seed sds, the paired `effect` (mean, signed by
  `direction`, relative to `max(|null|, floor)` when `relative`), its one-sided `bound`
  (half-width), `mde` (minimum detectable effect at `power`, in the effect's units) and `outcome`.
  """
  if len(trained) != len(null):   # a sweep not run (or of another grid): nothing to pair
    trained, null = [], []
  t = np.array([np.nan if v is None else v for v in trained], np.float64)
  n = np.array([np.nan if v is None else v for v in null], np.float64)
  ok = np.isfinite(t) & np.isfinite(n)
  scale = np.maximum(np.abs(n), floor) if relative else np.ones_like(n)
  if relative:
    ok &= scale > 0
  t, n, scale = t[ok], n[ok], scale[ok]
  result = {"n": int(ok.sum()), "trained": _mean(t), "trained_sd": _sd(t), "null": _mean(n),
            "null_sd": _sd(n), "effect": math.nan, "bound": math.nan, "mde": math.nan,
            "outcome": INCONCLUSIVE}
  if result["n"] < 2:
    return result
  diff = direction * (t - n) / scale
  effect = float(np.mean(diff))
  sd = float(np.std(diff, ddof=1))
  half = t_quantile(len(diff) - 1, confidence) * sd / math.sqrt(len(diff))
  result.update(effect=effect, bound=half,
                mde=minimum_detectable_effect(sd, len(diff), confidence, power))
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
  """Kaplan-Meier median onset (`onsets`), runs without an onset censored at the budget; inf when
  it is not reached (at least half of the runs never collapsed), NaN without runs."""
  if not onsets:
    return math.nan
  observed = [v is not None and math.isfinite(v) for v in onsets]
  times = [float(v) if seen else float(budget) for v, seen in zip(onsets, observed)]
  result = onsets_lib.median(onsets_lib.kaplan_meier(times, observed))
  return result.value if result.reached else math.inf


def onset_trend(brakes: Sequence[float], onsets: Sequence[float | None],
                status: Sequence[str], budget: float, *, first_logged: float | None = None,
                alpha: float = 0.05) -> dict:
  """Claim 2 on one sweep: does the onset step increase with the brake?

  Args:
    brakes: `[R]` each run's brake.
    onsets: `[R]` each run's onset step (None without one).
    status: `[R]` "onset", "censored" (no onset by the budget), "early" (censored before the
      budget: diverged) or "pre-existing" (above the threshold at step 0).
    budget: the last logged step (where "censored" runs are censored).
    first_logged: the first logged step after 0 (the onsets' resolution); None: not known.
    alpha: one-sided level of the trend test.

  Returns:
    dict with per-brake `brakes`, `medians` (Kaplan-Meier over the comparable runs; inf = not
    reached), `fractions` (share with an onset), `n_pre_existing`, `n_early`, `n_onsets` and
    `n_at_first_logged` (onsets at `first_logged`); `tau`, `p_value`; `outcome`: inconclusive when
    no run has an onset (nothing to delay), when the comparable runs have a single brake, or when
    every one has its onset at the same step (unresolved by the log interval); yes when tau > 0
    with one-sided p < alpha, no when tau <= 0, else inconclusive; and a `reason`.
  """
  order = sorted(set(float(b) for b in brakes))
  comparable = [s in ("onset", "censored") for s in status]
  times = [float(o) if s == "onset" else 2.0 * budget + 1.0
           for o, s in zip(onsets, status)]
  medians, fractions = [], []
  for b in order:
    members = [i for i, (bb, c) in enumerate(zip(brakes, comparable)) if float(bb) == b and c]
    medians.append(onset_median([onsets[i] if status[i] == "onset" else None for i in members],
                                budget) if members else math.nan)
    fractions.append(float(np.mean([status[i] == "onset" for i in members])) if members
                     else math.nan)
  observed = [float(o) for o, s in zip(onsets, status) if s == "onset"]
  result = {"brakes": order, "medians": medians, "fractions": fractions,
            "n_pre_existing": sum(s == "pre-existing" for s in status),
            "n_early": sum(s == "early" for s in status), "n_onsets": len(observed),
            "n_at_first_logged": (sum(o == first_logged for o in observed)
                                  if first_logged is not None else 0),
            "tau": math.nan, "p_value": math.nan}
  x = [float(b) for b, c in zip(brakes, comparable) if c]
  y = [t for t, c in zip(times, comparable) if c]
  if not observed:
    return dict(result, outcome=INCONCLUSIVE,
                reason="no run has an onset: nothing for the brake to delay")
  if len(set(x)) < 2:
    return dict(result, outcome=INCONCLUSIVE, reason="one brake: no trend to test")
  if len(set(y)) < 2:
    return dict(result, outcome=INCONCLUSIVE,
                reason=(f"every run's onset is at step {y[0]:g}, inside one log interval: a "
                        "delay shorter than the interval cannot be seen"))
  test = scipy_stats.kendalltau(x, y, alternative="greater")
  result.update(tau=float(test.statistic), p_value=float(test.pvalue))
  if result["p_value"] < alpha:
    return dict(result, outcome=YES, reason="")
  if result["tau"] <= 0:
    return dict(result, outcome=NO, reason="onsets do not come later at larger brakes")
  return dict(result, outcome=INCONCLUSIVE,
              reason=("later onsets at larger brakes, not significant "
                      f"(p = {result['p_value']:.2g})"))


def _mean(x: np.ndarray) -> float:
  return float(np.mean(x)) if len(x) else math.nan


def _sd(x: np.ndarray) -> float:
  return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan

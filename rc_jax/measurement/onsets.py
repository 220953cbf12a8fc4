"""Onsets as censored data: the Kaplan-Meier estimator and its median (pure NumPy).

A run's onset is an event time. A run with no onset within the budget is *censored* at the last
step it was observed (the last logged step, or its last finite metric value if it diverged): its
onset is known only to lie beyond that step. Dropping such runs, or averaging only the runs that
had an onset, biases onset statistics early; the Kaplan-Meier (product-limit) estimator does not.

With distinct event times `t_1 < ... < t_E`, `d_i` onsets at `t_i` and `n_i` runs at risk at `t_i`
(runs whose time, event or censoring, is `>= t_i`: a run censored at `t_i` still counts at `t_i`),

    S(t) = prod_{t_i <= t} (1 - d_i / n_i)

is the estimated probability that a run has had no onset by step `t`. It is defined up to the end
of follow-up (the largest observed time).

Median onset (the convention of R's `survival::quantile.survfit`, which reduces to the ordinary
median without censoring): the first `t_i` with `S(t_i) < 1/2`; where `S` is exactly 1/2 on
`[t_i, t_j)`, the midpoint `(t_i + t_j) / 2`. It is *not reached* when `S` stays above 1/2 to the
end of follow-up (fewer than half of the runs, by Kaplan-Meier, have an onset) -- then the median
is only bounded below, by the end of follow-up `t_max` -- or when `S` ends on a plateau at exactly
1/2 -- then the plateau's unseen end lies beyond `t_max`, so the median exceeds `(t_i + t_max) / 2`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class KaplanMeier:
  """A Kaplan-Meier survival curve (a step function, right-continuous).

  Attributes:
    step: `[E]` distinct event (onset) times, increasing.
    survival: `[E]` `S(step[i])`, the survival just after each event time (1 before `step[0]`).
    at_risk: `[E]` `n_i`, runs at risk at each event time.
    events: `[E]` `d_i`, onsets at each event time.
    n: number of runs.
    end: end of follow-up, the largest observed time (event or censoring).
  """
  step: np.ndarray
  survival: np.ndarray
  at_risk: np.ndarray
  events: np.ndarray
  n: int
  end: float

  def at(self, t: float) -> float:
    """`S(t)` (1 before the first event; the last value after the last event)."""
    index = np.searchsorted(self.step, t, side="right")
    return 1.0 if index == 0 else float(self.survival[index - 1])

  def to_dict(self) -> dict[str, Any]:
    """JSON-ready `{"step", "survival", "at_risk", "events"}` lists."""
    return {"step": self.step.tolist(), "survival": self.survival.tolist(),
            "at_risk": self.at_risk.tolist(), "events": self.events.tolist()}


@dataclasses.dataclass(frozen=True)
class Median:
  """A Kaplan-Meier median onset.

  Attributes:
    value: the median when reached, else None.
    reached: whether the curve determines the median.
    bound: when not reached, a strict lower bound of the median (see the module docstring); else
      None.
    text: "850" when reached, "> 1000" when not.
  """
  value: float | None
  reached: bool
  bound: float | None
  text: str


def kaplan_meier(times: Sequence[float], observed: Sequence[bool]) -> KaplanMeier:
  """The Kaplan-Meier curve of `times [R]` (onset if `observed`, else censoring time).

  Raises ValueError on no runs, mismatched lengths or a non-finite time.
  """
  times = np.asarray(times, np.float64).ravel()
  observed = np.asarray(observed, bool).ravel()
  if not times.size:
    raise ValueError("kaplan_meier needs at least one run")
  if observed.shape != times.shape:
    raise ValueError(f"times has {times.size} entries but observed has {observed.size}")
  if not np.all(np.isfinite(times)):
    raise ValueError(f"times must be finite (censor a run without an onset), got {times}")
  step, events = np.unique(times[observed], return_counts=True)
  at_risk = np.asarray([np.sum(times >= t) for t in step], np.int64)
  survival = np.cumprod(1.0 - events / at_risk) if step.size else np.zeros(0)
  return KaplanMeier(step=step, survival=survival, at_risk=at_risk,
                     events=events.astype(np.int64), n=int(times.size), end=float(times.max()))


def median(km: KaplanMeier) -> Median:
  """The median onset of `km` (convention and bounds in the module docstring)."""
  below = np.flatnonzero(km.survival < 0.5 - _TOLERANCE)
  half = np.flatnonzero(np.abs(km.survival - 0.5) <= _TOLERANCE)
  if half.size:  # a plateau at exactly 1/2 from step[half[0]] to the next event (if any)
    start = km.step[half[0]]
    if below.size:
      return _reached((start + km.step[below[0]]) / 2)
    return _not_reached((start + km.end) / 2)
  if below.size:
    return _reached(km.step[below[0]])
  return _not_reached(km.end)


def _reached(value: float) -> Median:
  return Median(value=float(value), reached=True, bound=None, text=f"{value:g}")


def _not_reached(bound: float) -> Median:
  return Median(value=None, reached=False, bound=float(bound), text=f"> {bound:g}")


def censored_times(steps: Sequence[float], series: np.ndarray,
                   onset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Event-or-censoring times `[R]` and the observed mask `[R]` from onsets and their series.

  Args:
    steps: `[K]` logged steps.
    series: `[R, K]` the (layer-reduced) onset metric; NaN/inf where undefined or diverged.
    onset: `[R]` onset steps, inf when the run never had one.

  Returns:
    `(time, observed)`: a run with an onset is observed at its onset step; one without is censored
    at its last step with a finite `series` value (the last logged step unless it diverged; the
    first logged step if it never had one); a pre-existing run (onset NaN: above the threshold
    before training) has time NaN and is not observed.
  """
  steps = np.asarray(steps, np.float64)
  series = np.asarray(series, np.float64)
  onset = np.asarray(onset, np.float64)
  finite = np.isfinite(series)
  last = np.where(finite.any(axis=-1), series.shape[-1] - 1 - np.argmax(finite[:, ::-1], axis=-1),
                  0)
  observed = np.isfinite(onset)
  time = np.where(observed, onset, steps[last])
  return np.where(np.isnan(onset), np.nan, time), observed

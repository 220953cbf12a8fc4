"""Calibration of the onset threshold: the concentration statistic where the answer is "no".

For every family and task of the suite, the statistic (layer-reduced as the onset reduces it) is
measured on the probe batch at initialisation, for `seeds` x every brake of the preset's grid, and
on the positional-prior twin (`content=False`), whose routing is its prior. An onset threshold must
exceed all of these: `threshold = max(floor, safety x the largest null value)`, per family.

    python experiments/calibrate.py --preset=cpu     # prints the block recorded in configs/report.py

Seeds are disjoint from the sweeps' (100, 101, ...), so the threshold is not fitted to the runs it
judges; the report checks it against the sweeps' own step-0 values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.measurement import metrics
from rc_jax.engine.problem import build_problem
from rc_jax.report import suite

FIRST_SEED = 100


def null_values(config, metric: str, seeds: int, layer_reduce: str = "max") -> np.ndarray:
  """`[seeds, brakes]` of `metric` at initialisation (layer-reduced) over `config.sweep.brakes`."""
  problem = build_problem(config)

  @jax.jit
  def measure(key, brake):
    out, _, _ = problem.probe(problem.init_params(key), brake)
    stacked = jnp.stack([metrics.collapse_metrics(routing, prior=prior)[metric]
                         for routing, prior in zip(out.routings, out.priors)])
    return jnp.nanmax(stacked) if layer_reduce == "max" else jnp.nanmean(stacked)

  brakes = [float(b) for b in config.sweep.brakes]
  return np.array([[float(measure(jax.random.key(FIRST_SEED + s), jnp.float32(b)))
                    for b in brakes] for s in range(seeds)])


def calibrate(preset: str, metric: str, *, seeds: int = 8, floor: float = 0.1,
              safety: float = 1.5, layer_reduce: str = "max") -> dict:
  """Per family: init values over seeds x brakes x tasks and the prior twin's, and the threshold.

  Returns `{family: {"n_init", "init_mean", "init_q99", "init_max", "prior_max", "threshold"}}`.
  """
  table = {}
  for family in suite.FAMILIES:
    init, prior = [], []
    for task in suite.TASKS[family]:
      variants = (task,) if task else ()
      sweep = suite.Sweep(family, variants)
      init.append(null_values(sweep.config(preset), metric, seeds, layer_reduce).ravel())
      prior.append(null_values(sweep.prior_twin().config(preset), metric, seeds,
                               layer_reduce).ravel())
    init, prior = np.concatenate(init), np.concatenate(prior)
    largest = max(float(np.nanmax(init)), float(np.nanmax(prior)))
    table[family] = {"n_init": int(init.size), "init_mean": round(float(np.nanmean(init)), 4),
                     "init_q99": round(float(np.nanquantile(init, 0.99)), 4),
                     "init_max": round(float(np.nanmax(init)), 4),
                     "prior_max": round(float(np.nanmax(prior)), 4),
                     "threshold": round(max(floor, safety * largest), 3)}
  return table

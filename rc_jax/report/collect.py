"""A finished sweep -> what the report reads of it: per-run, per-layer values of every metric at the
end, at initialisation and on the shuffled-input probe, and each run's concentration series.

Values stay per layer (`{metric: [R][L]}`, None where undefined): the report reduces layers itself
(`stats.signature_reduce` in the signature's direction, or a mean for Gu et al.'s sink rate), and it
computes onsets from `series` with its own calibrated thresholds, so none of its rules is baked into
the cache.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rc_jax.engine import sweep
from rc_jax.engine.programs import hparams_of
from rc_jax.measurement.stats import reduce_layers
from rc_jax.outputs import tables

VALUES_FILE = "report_values.json"
VERSION = 2   # bump when the layout below changes: older caches are collected again


def shuffled_null(config, result: sweep.SweepResult) -> dict[str, np.ndarray]:
  """Every run's final parameters measured on the shuffled probe: `{metric: [R, L] or [R]}`."""
  trainer, _ = sweep.compiled_for(config)
  n_runs = len(result.runs)
  params = sweep.unlayout(result.state.params, n_runs)
  hparams = hparams_of(result.runs)
  # one run at a time (lax.map): the vmapped measurement of 8 SSM runs deadlocked XLA:CPU
  # (jaxlib 0.10.2, every thread idle) where the one-run program does not
  measure = jax.jit(lambda p, h: jax.lax.map(lambda a: trainer.measure(*a, shuffled=True), (p, h)))
  return {name: np.asarray(value) for name, value in measure(params, hparams).items()}


def _per_layer(values: dict[str, np.ndarray], index) -> dict[str, list]:
  """`{metric: [R][L]}` (per-step scalars: `[R]`) at logged step `index` (None: already per run)."""
  out = {}
  for name, value in values.items():
    value = np.asarray(value, np.float64)
    if index is not None:
      value = value[:, index]
    if value.ndim in (1, 2):
      out[name] = [[None if not np.isfinite(v) else float(v) for v in np.atleast_1d(row)]
                   if value.ndim == 2 else (None if not np.isfinite(row) else float(row))
                   for row in value]
  return out


def sweep_values(config, result: sweep.SweepResult, fingerprint: str, series_metric: str,
                 series_reduce: str = "max") -> dict:
  """Per-run grid coordinates and status, the logged steps, the `series_metric` (layer-reduced by
  `series_reduce`) at every logged step, and every metric per layer at the end, at initialisation
  and on the shuffled probe."""
  logs = {name: value for name, value in result.logs.items() if name != "step"}
  steps = np.asarray(result.logs["step"])[0]
  series = reduce_layers(np.asarray(result.logs[series_metric]), series_reduce)
  return {
      "version": VERSION,
      "fingerprint": fingerprint,
      "series_metric": series_metric, "series_reduce": series_reduce,
      "budget": int(steps[-1]),
      "steps": steps.tolist(),
      "runs": [dict(run) for run in result.runs],
      "series": [[None if not np.isfinite(v) else float(v) for v in row] for row in series],
      "final": _per_layer(logs, -1),
      "init": _per_layer(logs, 0),
      "shuffled": _per_layer(shuffled_null(config, result), None),
  }


def load_or_collect(config, workdir: str, series_metric: str, series_reduce: str = "max") -> dict:
  """Runs (or resumes, or reuses) the sweep in `workdir` and returns its `sweep_values`, cached in
  `workdir/report_values.json` for the config's fingerprint, the series and `VERSION`."""
  fingerprint = sweep.config_fingerprint(config)
  path = os.path.join(workdir, VALUES_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      cached = json.load(f)
    if (cached.get("version") == VERSION and cached.get("fingerprint") == fingerprint
        and cached.get("series_metric") == series_metric
        and cached.get("series_reduce") == series_reduce):
      return cached
  result = sweep.run_sweep(config, workdir)
  values = sweep_values(config, result, fingerprint, series_metric, series_reduce)
  with tables.atomic_open(path) as f:
    json.dump(values, f, indent=None, separators=(",", ":"))
  return values

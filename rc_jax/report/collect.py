"""A finished sweep -> per-run values of every metric at the end, at initialisation and on the
shuffled-input probe, layer-reduced in the direction of the signature (`stats.reduce_layers`)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rc_jax import outputs, sweep
from rc_jax.report import stats

VALUES_FILE = "report_values.json"


def _flat_runs(tree, n_runs: int):
  """Run-batched `[n_dev, per_dev, ...]` arrays -> `[R, ...]` with the padding dropped."""
  return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])[:n_runs], tree)


def shuffled_null(config, result: sweep.SweepResult) -> dict[str, np.ndarray]:
  """Every run's final parameters measured on the shuffled probe: `{metric: [R, L] or [R]}`."""
  trainer, _ = sweep.compiled_for(config)
  n_runs = len(result.runs)
  params = _flat_runs(result.state.params, n_runs)
  hparams = {"brake": np.array([r["brake"] for r in result.runs], np.float32),
             "learning_rate": np.array([r["learning_rate"] for r in result.runs], np.float32)}
  measure = jax.jit(jax.vmap(lambda p, h: trainer.measure(p, h, shuffled=True)))
  return {name: np.asarray(value) for name, value in measure(params, hparams).items()}


def _reduced(values: dict[str, np.ndarray], index) -> dict[str, list]:
  """`{metric: per-run value}` at `index` (a logged step, or None for `[R, L]` values)."""
  out = {}
  for name, value in values.items():
    value = np.asarray(value, np.float64)
    if index is not None:
      value = value[:, index]
    if value.ndim == 2:       # per layer
      value = stats.reduce_layers(name, value)
    elif value.ndim != 1:
      continue
    out[name] = [None if not np.isfinite(v) else float(v) for v in value]
  return out


def _onsets(logs, onset: dict) -> list:
  return [None if not np.isfinite(o) else float(o) for o in outputs.onset_steps(logs, onset)]


def sweep_values(config, result: sweep.SweepResult, fingerprint: str,
                 exploratory_onset: dict) -> dict:
  """Per-run grid coordinates, onset steps (the config's and `exploratory_onset`'s) and the final /
  initial / shuffled metric values."""
  logs = {name: value for name, value in result.logs.items() if name != "step"}
  onset = {"metric": config.metrics.onset_metric, "threshold": config.metrics.onset_threshold,
           "layer_reduce": config.metrics.onset_layer_reduce}
  onsets = _onsets(result.logs, onset)
  exploratory = _onsets(result.logs, exploratory_onset)
  return {
      "fingerprint": fingerprint,
      "budget": int(np.asarray(result.logs["step"])[0, -1]),
      "onset": onset,
      "exploratory_onset": dict(exploratory_onset),
      "runs": [dict(run, onset_step=o, exploratory_onset_step=e)
               for run, o, e in zip(result.runs, onsets, exploratory)],
      "final": _reduced(logs, -1),
      "init": _reduced(logs, 0),
      "shuffled": _reduced(shuffled_null(config, result), None),
  }


def load_or_collect(config, workdir: str, exploratory_onset: dict) -> dict:
  """Runs (or resumes, or reuses) the sweep in `workdir` and returns its `sweep_values`, cached in
  `workdir/report_values.json` for the config's fingerprint and the exploratory onset."""
  fingerprint = sweep.config_fingerprint(config)
  path = os.path.join(workdir, VALUES_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      cached = json.load(f)
    if (cached.get("fingerprint") == fingerprint
        and cached.get("exploratory_onset") == dict(exploratory_onset)):
      return cached
  result = sweep.run_sweep(config, workdir)
  values = sweep_values(config, result, fingerprint, exploratory_onset)
  with outputs.atomic_open(path) as f:
    json.dump(values, f, indent=1)
  return values

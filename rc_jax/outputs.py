"""Output writers of a sweep: tidy metrics table, onset table, JSON summary and figures.

Inputs (host NumPy, as the sweep produces them):

- `runs`: one dict per run, e.g. `{"run": 0, "seed": 0, "brake": 0.1, "learning_rate": 1e-3}`.
  Every key becomes a column; "run" and "seed" identify a run, "status" and "diverged_step" (set by
  the sweep) describe it, every other key is a grid coordinate (runs that differ only in those
  are seeds of one grid point).
- `logs`: `{"step": int [R, K], <scalar>: [R, K], <per-layer metric>: [R, K, L]}`: R runs, K logged
  steps (the same steps for every run), L layers. Any `[R, K]` entry other than "step" is a
  per-step scalar (loss, probe_loss, ...), any `[R, K, L]` entry a per-layer collapse metric.
  Values may be NaN or inf (undefined metrics, diverged runs).
- `onset`: `{"metric": str, "threshold": float, "layer_reduce": "max" | "mean" | int}`: the
  per-layer metric whose crossing defines the onset, and how its layers are reduced (NaN-ignoring
  max or mean, or one layer's index).

CSV conventions (both tables; readable by the `csv` module and `pandas.read_csv`): a header row,
then one row per record. Float32 values are written as their shortest round-tripping decimal
("0.1"); NaN as `nan` and infinities as `inf` / `-inf` (`float(cell)` and pandas parse these back).
A run that never crosses the onset threshold has an empty `onset_step` cell (pandas: NaN).

Every file is written atomically: to a temporary file in the target directory, then `os.replace`d
onto its final name, so a crash never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax import metrics

LAYER_REDUCTIONS = ("max", "mean")
_ID_KEYS = ("run", "seed", "status", "diverged_step")  # not grid coordinates


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[Any]:
  """Opens `path` for writing ("w" text, utf-8, newline="" / "wb" binary) via a temporary file.

  The temporary file lives in the same directory and replaces `path` only when the block exits
  cleanly; on an exception it is removed and `path` is left as it was.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  directory, name = os.path.split(os.path.abspath(path))
  tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
  try:
    with open(tmp, mode.replace("w", "x"), **text) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _host(array: Any) -> np.ndarray:
  """NumPy copy of `array`; floats narrower than float64 become float64 of their shortest decimal.

  So a float32 0.1 is 0.1 (not 0.10000000149011612) in tables, CSV and JSON, and still casts back
  to the same float32.
  """
  array = np.asarray(array)
  if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize < 8:
    return array.astype(str).astype(np.float64)
  return array


def _py(value: Any) -> Any:
  """A NumPy scalar as the matching Python scalar; anything else unchanged."""
  return value.item() if isinstance(value, np.generic) else value


def split_logs(logs: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                 dict[str, np.ndarray]]:
  """Validates `logs` and splits it into `step [R, K]`, per-step scalars and per-layer metrics.

  Both dicts keep the order of `logs`. Raises ValueError on a missing "step", no per-layer metric,
  inconsistent shapes, or steps that differ between runs.
  """
  if "step" not in logs:
    raise ValueError("logs has no 'step' entry")
  step = np.asarray(logs["step"])
  if step.ndim != 2 or np.any(step != step[:1]):
    raise ValueError("logs['step'] must be [R, K] with the same steps for every run, got shape "
                     f"{step.shape}")
  scalars, per_layer = {}, {}
  for name, value in logs.items():
    if name == "step":
      continue
    value = np.asarray(value)
    if value.ndim == 2:
      scalars[name] = value
    elif value.ndim == 3:
      per_layer[name] = value
    else:
      raise ValueError(f"logs[{name!r}] must be [R, K] or [R, K, L], got shape {value.shape}")
    if value.shape[:2] != step.shape:
      raise ValueError(f"logs[{name!r}] has shape {value.shape}, steps are {step.shape}")
  if not per_layer:
    raise ValueError("logs has no per-layer [R, K, L] metric")
  if len({value.shape[2] for value in per_layer.values()}) != 1:
    raise ValueError("per-layer metrics disagree on the number of layers")
  return step, scalars, per_layer


def run_keys(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  """All keys of `runs`, in order of first appearance."""
  return list(dict.fromkeys(key for run in runs for key in run))


def _check_runs(runs: Sequence[Mapping[str, Any]], n_runs: int) -> None:
  if len(runs) != n_runs:
    raise ValueError(f"{len(runs)} runs but logs hold {n_runs}")


def _nan_reduce(fn, values: np.ndarray, axis: int) -> np.ndarray:
  """`fn` (np.nanmax / np.nanmean) over `axis`; NaN where every entry is NaN, without a warning."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return fn(values, axis=axis)


def reduce_layers(values: np.ndarray, layer_reduce: str | int) -> np.ndarray:
  """Reduces a per-layer metric `[..., L]` to `[...]`: NaN-ignoring "max"/"mean", or a layer index.

  All-NaN layers give NaN.
  """
  values = np.asarray(values, np.float64)
  if layer_reduce == "max":
    return _nan_reduce(np.nanmax, values, -1)
  if layer_reduce == "mean":
    return _nan_reduce(np.nanmean, values, -1)
  if isinstance(layer_reduce, (int, np.integer)) and not isinstance(layer_reduce, bool):
    return values[..., int(layer_reduce)]
  raise ValueError(f"layer_reduce must be one of {LAYER_REDUCTIONS} or a layer index, "
                   f"got {layer_reduce!r}")


def metric_rows(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any]) -> Iterator[dict]:
  """Yields the tidy metrics table row by row (see `metrics_table`)."""
  step, scalars, per_layer = split_logs(logs)
  _check_runs(runs, step.shape[0])
  steps = step[0].tolist()
  scalar_lists = {name: _host(value).tolist() for name, value in scalars.items()}
  layer_lists = {name: _host(value).tolist() for name, value in per_layer.items()}
  n_layers = next(iter(per_layer.values())).shape[2]
  for r, run in enumerate(runs):
    run_cells = {key: _py(value) for key, value in run.items()}
    for k, step_value in enumerate(steps):
      step_cells = {name: value[r][k] for name, value in scalar_lists.items()}
      for layer in range(n_layers):
        row = dict(run_cells, step=step_value, layer=layer, **step_cells)
        row.update((name, value[r][k][layer]) for name, value in layer_lists.items())
        yield row


def metrics_columns(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any]) -> list[str]:
  """Columns of the metrics table: run keys, step, layer, per-step scalars, per-layer metrics."""
  _, scalars, per_layer = split_logs(logs)
  return run_keys(runs) + ["step", "layer"] + list(scalars) + list(per_layer)


def metrics_table(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any]) -> list[dict]:
  """The tidy metrics table: one dict per run x logged step x layer (R*K*L rows).

  Keys as in `metrics_columns`; per-step scalars repeat on each layer's row. Values are Python
  scalars (float NaN/inf kept), run-major, then step, then layer.
  """
  return list(metric_rows(runs, logs))


def _write_csv(path: str, columns: Sequence[str], rows: Iterator[Mapping[str, Any]]) -> None:
  with atomic_open(path) as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_metrics_csv(path: str, runs: Sequence[Mapping[str, Any]],
                      logs: Mapping[str, Any]) -> str:
  """Writes `metrics_table` as CSV to `path` (atomically, streaming rows); returns `path`."""
  _write_csv(path, metrics_columns(runs, logs), metric_rows(runs, logs))
  return path


def onset_steps(logs: Mapping[str, Any], onset: Mapping[str, Any]) -> np.ndarray:
  """Float64 `[R]`: each run's onset step (`rc_jax.metrics.onset_step`), inf when never."""
  step, _, per_layer = split_logs(logs)
  name = onset["metric"]
  if name not in per_layer:
    raise ValueError(f"onset metric {name!r} is not a per-layer metric of logs: {list(per_layer)}")
  series = reduce_layers(per_layer[name], onset["layer_reduce"])
  return np.asarray(metrics.onset_step(step[0], series, float(onset["threshold"])), np.float64)


def _finite_or_none(value: float) -> float | None:
  return value if math.isfinite(value) else None


def onset_table(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                onset: Mapping[str, Any]) -> list[dict]:
  """One dict per run: run keys, metric, threshold, layer_reduce, onset_step (None when never)."""
  steps = onset_steps(logs, onset)
  _check_runs(runs, steps.size)
  config = {"metric": onset["metric"], "threshold": float(onset["threshold"]),
            "layer_reduce": _py(onset["layer_reduce"])}
  return [dict({key: _py(value) for key, value in run.items()}, **config,
               onset_step=_finite_or_none(float(value)))
          for run, value in zip(runs, steps)]


def write_onsets_csv(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                     onset: Mapping[str, Any]) -> str:
  """Writes `onset_table` as CSV to `path` (atomically); returns `path`."""
  columns = run_keys(runs) + ["metric", "threshold", "layer_reduce", "onset_step"]
  _write_csv(path, columns, iter(onset_table(runs, logs, onset)))
  return path


def describe(values: Any) -> dict:
  """`{"n", "mean", "std", "min", "max"}` over the finite entries of `values` (None if undefined).

  `std` is the sample standard deviation (ddof=1), None for fewer than two values.
  """
  finite = np.asarray(values, np.float64).ravel()
  finite = finite[np.isfinite(finite)]
  if not finite.size:
    return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
  return {"n": int(finite.size), "mean": float(finite.mean()),
          "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
          "min": float(finite.min()), "max": float(finite.max())}


def grid_points(runs: Sequence[Mapping[str, Any]]) -> dict[tuple, list[int]]:
  """Run indices grouped by grid point: the values of every key except `_ID_KEYS`.

  Keys of the result are tuples of those values in `run_keys` order, sorted (numbers numerically).
  """
  keys = [key for key in run_keys(runs) if key not in _ID_KEYS]
  groups: dict[tuple, list[int]] = {}
  for index, run in enumerate(runs):
    groups.setdefault(tuple(_py(run.get(key)) for key in keys), []).append(index)
  return {point: groups[point] for point in sorted(groups, key=_sort_key)}


def _sort_key(point: tuple) -> tuple:
  """Orders grid points: numbers numerically, before anything else (compared as strings)."""
  return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in point)


def _jsonable(value: Any) -> Any:
  """`value` with NumPy types as Python ones and non-finite floats as None (strict JSON)."""
  if isinstance(value, Mapping):
    return {str(key): _jsonable(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(item) for item in value]
  if isinstance(value, np.ndarray):
    return _jsonable(value.tolist())
  value = _py(value)
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _final_values(scalars: dict, per_layer: dict, r: int) -> dict:
  """Run r's last logged value of each scalar, and mean / max over layers of each metric."""
  final = {name: float(_host(value[r, -1])) for name, value in scalars.items()}
  final.update((name, {"mean": float(reduce_layers(_host(value[r, -1]), "mean")),
                       "max": float(reduce_layers(_host(value[r, -1]), "max"))})
               for name, value in per_layer.items())
  return final


def summary(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any], onset: Mapping[str, Any],
            extra: Mapping[str, Any] | None = None) -> dict:
  """The sweep summary as a JSON-ready dict (NaN/inf as None; `extra` merged in).

  Keys:
    n_runs, n_steps_logged, first_step, last_step; onset: the onset config.
    runs: per run, its keys plus "final" (last logged value of each per-step scalar, and
      `{"mean", "max"}` over layers of each per-layer metric), "onset_step", "diverged".
    by_brake: per grid point (brake x learning rate x ... : every run key but `_ID_KEYS`), over
      its seeds: the coordinates, "n_runs", "runs" (ids), "final_concentration" (`describe` of the
      onset metric at the last step, layer-reduced as configured), "onset_step" (`describe` over
      the runs with an onset), "n_onset".
    diverged, n_diverged: ids ("run", else the index) of the runs whose final "loss" is
      non-finite (none without a "loss" log).
    then every key of `extra`; one clashing with the keys above raises ValueError.
  """
  step, scalars, per_layer = split_logs(logs)
  _check_runs(runs, step.shape[0])
  onsets = onset_steps(logs, onset)
  concentration = reduce_layers(per_layer[onset["metric"]][:, -1], onset["layer_reduce"])
  final_loss = scalars["loss"][:, -1] if "loss" in scalars else np.zeros(len(runs))
  diverged = ~np.isfinite(final_loss)
  ids = [_py(run.get("run", index)) for index, run in enumerate(runs)]
  per_run = [dict(run, final=_final_values(scalars, per_layer, r), onset_step=onsets[r],
                  diverged=bool(diverged[r])) for r, run in enumerate(runs)]
  keys = [key for key in run_keys(runs) if key not in _ID_KEYS]
  by_brake = [dict(zip(keys, point), n_runs=len(members), runs=[ids[i] for i in members],
                   final_concentration=describe(concentration[members]),
                   onset_step=describe(onsets[members]),
                   n_onset=int(np.isfinite(onsets[members]).sum()))
              for point, members in grid_points(runs).items()]
  out = {"n_runs": len(runs), "n_steps_logged": int(step.shape[1]),
         "first_step": int(step[0, 0]), "last_step": int(step[0, -1]), "onset": dict(onset),
         "runs": per_run, "by_brake": by_brake,
         "diverged": [ids[r] for r in np.flatnonzero(diverged)], "n_diverged": int(diverged.sum())}
  clashes = set(out) & set(extra or {})
  if clashes:
    raise ValueError(f"extra keys clash with summary keys: {sorted(clashes)}")
  out.update(extra or {})
  return _jsonable(out)


def write_summary_json(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                       onset: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
  """Writes `summary` as strict JSON (no NaN/Infinity tokens; indent 2) to `path`; returns it."""
  text = json.dumps(summary(runs, logs, onset, extra), indent=2, allow_nan=False)
  with atomic_open(path) as f:
    f.write(text + "\n")
  return path


def write_all(workdir: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
              onset: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes every sweep output into `workdir` and returns `{name: path}`.

  Files: metrics.csv, onsets.csv, figures/phase_diagram.png, figures/onset_vs_brake.png,
  figures/final_metrics_vs_brake.png, then summary.json (last, so a crash before it leaves no
  fresh summary). Names: "metrics", "onsets", "phase_diagram", "onset_vs_brake",
  "final_metrics_vs_brake", "summary".
  """
  # Imported here: plots imports this module (and tables should not pay for matplotlib).
  from rc_jax import plots  # pylint: disable=import-outside-toplevel

  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)

  def figure(name: str) -> str:
    return os.path.join(workdir, "figures", f"{name}.png")

  paths = {
      "metrics": write_metrics_csv(os.path.join(workdir, "metrics.csv"), runs, logs),
      "onsets": write_onsets_csv(os.path.join(workdir, "onsets.csv"), runs, logs, onset),
      "phase_diagram": plots.phase_diagram(figure("phase_diagram"), runs, logs, onset["metric"],
                                           onset["layer_reduce"]),
      "onset_vs_brake": plots.onset_vs_brake(
          figure("onset_vs_brake"), runs, onset_steps(logs, onset),
          f"{onset['metric']} > {onset['threshold']:g}, layer_reduce={onset['layer_reduce']}"),
      "final_metrics_vs_brake": plots.final_metrics_vs_brake(figure("final_metrics_vs_brake"),
                                                             runs, logs),
  }
  paths["summary"] = write_summary_json(os.path.join(workdir, "summary.json"), runs, logs, onset,
                                        extra)
  return paths

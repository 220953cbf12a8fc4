"""Sweep tables: tidy metrics, onsets (censored), per-grid-point onset summary, JSON summary.

Tables only: this module never imports the figures (`rc_jax.outputs.plots` imports it;
`rc_jax.outputs.artifacts` writes both). Inputs (host NumPy, as the sweep produces them):

- `runs`: one dict per run, e.g. `{"run": 0, "seed": 0, "brake": 0.1, "learning_rate": 1e-3}`.
  Every key becomes a column; "run" and "seed" identify a run, "status" and "diverged_step" (set by
  the sweep) describe it, every other key is a grid coordinate (runs that differ only in those
  are seeds of one grid point).
- `logs`: `{"step": int [R, K], <scalar>: [R, K], <per-layer metric>: [R, K, L]}`: R runs, K logged
  steps (the same steps for every run), L layers. Any `[R, K]` entry other than "step" is a
  per-step scalar (loss, probe_loss, ...), any `[R, K, L]` entry a per-layer collapse metric.
  Values may be NaN or inf (undefined metrics, diverged runs).
- `onset`: `{"metric": str, "threshold": float, "layer_reduce": "max" | "mean" | int, "rise":
  float (optional, 0)}`: the per-layer metric whose crossing defines the onset (above `threshold`
  and at least `rise` above the run's own value at step 0, `rc_jax.measurement.metrics.onset_step`),
  and how its layers are reduced (NaN-ignoring max or mean, or one layer's index). That ONE layer
  reduction is used for every per-layer value in every table (and figure): onsets, final values, the
  summary.

Onsets are censored data (see `rc_jax.measurement.onsets`): a run without an onset is censored at
its last observed step, never dropped; per grid point the tables give `n_onset` of `n_runs` and the
Kaplan-Meier median onset ("> bound" when not reached), not a mean over the runs that had one. A run
already above the threshold at step 0 is *pre-existing*: it has no onset and is not at risk of one,
so it is counted apart (`n_pre_existing`) and left out of the Kaplan-Meier curve.

CSV conventions (every table; readable by the `csv` module and `pandas.read_csv`): a header row,
then one row per record. Float32 values are written as their shortest round-tripping decimal
("0.1"); NaN as `nan` and infinities as `inf` / `-inf` (`float(cell)` and pandas parse these back);
booleans as `True` / `False`; None (undefined) as an empty cell (pandas: NaN).

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax.measurement import metrics, onsets
from rc_jax.measurement.stats import ONSET_LAYER_REDUCTIONS, reduce_layers

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


def write_csv(path: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
  """Writes `rows` (dicts keyed by `columns`) as CSV to `path`, atomically; returns `path`."""
  with atomic_open(path) as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
  return path


def write_metrics_csv(path: str, runs: Sequence[Mapping[str, Any]],
                      logs: Mapping[str, Any]) -> str:
  """Writes `metrics_table` as CSV to `path` (atomically, streaming rows); returns `path`."""
  write_csv(path, metrics_columns(runs, logs), metric_rows(runs, logs))
  return path


def layer_label(layer_reduce: str | int) -> str:
  """How per-layer values were reduced, for labels: "max over layers", "layer 2"."""
  if layer_reduce in ONSET_LAYER_REDUCTIONS:
    return f"{layer_reduce} over layers"
  return f"layer {layer_reduce}"


def onset_series(logs: Mapping[str, Any], onset: Mapping[str, Any]) -> tuple[np.ndarray,
                                                                            np.ndarray]:
  """`(steps [K], series [R, K])`: the onset metric, layer-reduced as `onset` configures."""
  step, _, per_layer = split_logs(logs)
  name = onset["metric"]
  if name not in per_layer:
    raise ValueError(f"onset metric {name!r} is not a per-layer metric of logs: {list(per_layer)}")
  return step[0], reduce_layers(per_layer[name], onset["layer_reduce"])


def onset_steps(logs: Mapping[str, Any], onset: Mapping[str, Any]) -> np.ndarray:
  """Float64 `[R]`: each run's onset step (`metrics.onset_step`), inf when never, NaN when
  pre-existing."""
  steps, series = onset_series(logs, onset)
  return np.asarray(metrics.onset_step(steps, series, float(onset["threshold"]),
                                       float(onset.get("rise", 0.0))), np.float64)


def onset_events(logs: Mapping[str, Any], onset: Mapping[str, Any]) -> tuple[np.ndarray,
                                                                            np.ndarray]:
  """`(time [R], observed [R] bool)`: the onset step, or the step a run without one is censored at.

  Censoring: the run's last step with a finite onset metric
  (`rc_jax.measurement.onsets.censored_times`); pre-existing runs have time NaN (and observed
  False).
  """
  steps, series = onset_series(logs, onset)
  return onsets.censored_times(steps, series, onset_steps(logs, onset))


def _onset_config(onset: Mapping[str, Any]) -> dict:
  return {"metric": onset["metric"], "threshold": float(onset["threshold"]),
          "rise": float(onset.get("rise", 0.0)), "layer_reduce": _py(onset["layer_reduce"])}


ONSET_COLUMNS = ("metric", "threshold", "rise", "layer_reduce", "onset_step", "censored",
                 "censor_step", "pre_existing")


def onset_table(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                onset: Mapping[str, Any]) -> list[dict]:
  """One dict per run: run keys, then `ONSET_COLUMNS`.

  `onset_step` is None when the run never crossed; it is then `censored` at `censor_step` (else
  None), unless it is `pre_existing` (above the threshold at step 0: neither onset nor censored).
  """
  time, observed = onset_events(logs, onset)
  _check_runs(runs, time.size)
  config = _onset_config(onset)
  return [dict({key: _py(value) for key, value in run.items()}, **config,
               onset_step=float(t) if seen else None, censored=not seen and not math.isnan(t),
               censor_step=None if seen or math.isnan(t) else float(t),
               pre_existing=math.isnan(t))
          for run, t, seen in zip(runs, time.tolist(), observed.tolist())]


def write_onsets_csv(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                     onset: Mapping[str, Any]) -> str:
  """Writes `onset_table` as CSV to `path` (atomically); returns `path`."""
  write_csv(path, run_keys(runs) + list(ONSET_COLUMNS), iter(onset_table(runs, logs, onset)))
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


def grid_keys(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  """The grid coordinates: every run key but "run" and "seed"."""
  return [key for key in run_keys(runs) if key not in _ID_KEYS]


def grid_points(runs: Sequence[Mapping[str, Any]],
                keys: Sequence[str] | None = None) -> dict[tuple, list[int]]:
  """Run indices grouped by grid point: the values of `keys` (default `grid_keys(runs)`).

  Keys of the result are tuples of those values in `keys` order, sorted (numbers numerically).
  """
  keys = grid_keys(runs) if keys is None else keys
  groups: dict[tuple, list[int]] = {}
  for index, run in enumerate(runs):
    groups.setdefault(tuple(_py(run.get(key)) for key in keys), []).append(index)
  return {point: groups[point] for point in sorted(groups, key=point_sort_key)}


def point_sort_key(point: tuple) -> tuple:
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


def final_values(logs: Mapping[str, Any], layer_reduce: str | int) -> dict[str, np.ndarray]:
  """Float64 `[R]` per logged name: each run's last logged value, layers reduced by `layer_reduce`.

  Per-step scalars as they are; per-layer metrics reduced like the onset metric (one reduction for
  every table and figure). Float32 values become their shortest decimal (0.1, not 0.100000001).
  """
  _, scalars, per_layer = split_logs(logs)
  finals = {name: _host(value[:, -1]).astype(np.float64) for name, value in scalars.items()}
  finals.update((name, reduce_layers(_host(value[:, -1]), layer_reduce))
                for name, value in per_layer.items())
  return finals


ONSET_STAT_KEYS = ("n_onset", "n_censored", "n_pre_existing", "onset_median",
                   "onset_median_reached", "onset_median_bound", "onset_median_text")


def onset_stats(time: Any, observed: Any) -> dict:
  """Censoring-aware onset statistics of one group of runs (see `rc_jax.measurement.onsets`).

  Returns `ONSET_STAT_KEYS` (`onset_median` None and `onset_median_bound` its strict lower bound
  when the median is not reached; `onset_median_text` "850" or "> 1000", "pre-existing" when every
  run is) and "onset_km": the Kaplan-Meier curve `{"step", "survival", "at_risk", "events"}` at the
  onset steps, over the runs that are not pre-existing (time NaN).
  """
  time = np.asarray(time, np.float64)
  observed = np.asarray(observed, bool)
  at_risk = ~np.isnan(time)
  counts = {"n_onset": int(observed[at_risk].sum()), "n_censored": int((~observed[at_risk]).sum()),
            "n_pre_existing": int((~at_risk).sum())}
  if not at_risk.any():
    return dict(counts, onset_median=None, onset_median_reached=False, onset_median_bound=None,
                onset_median_text="pre-existing",
                onset_km={"step": [], "survival": [], "at_risk": [], "events": []})
  km = onsets.kaplan_meier(time[at_risk], observed[at_risk])
  med = onsets.median(km)
  return dict(counts, onset_median=med.value, onset_median_reached=med.reached,
              onset_median_bound=med.bound, onset_median_text=med.text, onset_km=km.to_dict())


def grid_summary(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                 onset: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[dict]:
  """Per grid point (`grid_points(runs, keys)`), over its seeds:

  the coordinates, "n_runs", "runs" (ids: "run", else the index), `onset_stats` (censoring-aware:
  n_onset of n_runs, Kaplan-Meier median, curve), "final" (`describe` over seeds of each
  `final_values` entry, layers reduced as `onset` configures) and "final_concentration" (that of
  the onset metric).
  """
  time, observed = onset_events(logs, onset)
  _check_runs(runs, time.size)
  finals = final_values(logs, onset["layer_reduce"])
  ids = [_py(run.get("run", index)) for index, run in enumerate(runs)]
  keys = grid_keys(runs) if keys is None else list(keys)
  rows = []
  for point, members in grid_points(runs, keys).items():
    final = {name: describe(value[members]) for name, value in finals.items()}
    rows.append(dict(zip(keys, point), n_runs=len(members), runs=[ids[i] for i in members],
                     **onset_stats(time[members], observed[members]), final=final,
                     final_concentration=final[onset["metric"]]))
  return rows


ONSET_SUMMARY_COLUMNS = (("metric", "threshold", "rise", "layer_reduce", "n_runs") + ONSET_STAT_KEYS
                         + ("budget_step",))


def onset_summary_table(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                        onset: Mapping[str, Any]) -> list[dict]:
  """One dict per grid point: its coordinates, then `ONSET_SUMMARY_COLUMNS`.

  `budget_step` is the last logged step (where runs without an onset are censored).
  """
  step, _, _ = split_logs(logs)
  config = _onset_config(onset)
  keys = grid_keys(runs)
  return [dict({key: row[key] for key in keys}, **config, n_runs=row["n_runs"],
               **{key: row[key] for key in ONSET_STAT_KEYS}, budget_step=int(step[0, -1]))
          for row in grid_summary(runs, logs, onset)]


def write_onset_summary_csv(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                            onset: Mapping[str, Any]) -> str:
  """Writes `onset_summary_table` as CSV to `path` (atomically); returns `path`."""
  columns = grid_keys(runs) + list(ONSET_SUMMARY_COLUMNS)
  write_csv(path, columns, iter(onset_summary_table(runs, logs, onset)))
  return path


def summary(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any], onset: Mapping[str, Any],
            extra: Mapping[str, Any] | None = None) -> dict:
  """The sweep summary as a JSON-ready dict (NaN/inf as None; `extra` merged in).

  Keys:
    n_runs, n_steps_logged, first_step, last_step; onset: the onset config; layer_reduce: the one
      layer reduction of every per-layer value below (the onset's); logged: `{"scalars",
      "per_layer"}` names of the logs.
    runs: per run, its keys plus "final" (`final_values`: last logged value, layers reduced),
      "onset_step" (None when never), "censored", "censor_step" (None when an onset or
      pre-existing), "pre_existing", "diverged".
    by_brake: `grid_summary` per grid point (brake x learning rate x ...: every run key but run and
      seed): coordinates, n_runs, runs, n_onset, n_censored, n_pre_existing, onset_median (None
      when not reached),
      onset_median_reached, onset_median_bound, onset_median_text, onset_km, final,
      final_concentration.
    diverged, n_diverged: ids ("run", else the index) of the runs whose final "loss" is
      non-finite (none without a "loss" log).
    then every key of `extra`; one clashing with the keys above raises ValueError.
  """
  step, scalars, per_layer = split_logs(logs)
  _check_runs(runs, step.shape[0])
  time, observed = onset_events(logs, onset)
  finals = final_values(logs, onset["layer_reduce"])
  final_loss = scalars["loss"][:, -1] if "loss" in scalars else np.zeros(len(runs))
  diverged = ~np.isfinite(final_loss)
  ids = [_py(run.get("run", index)) for index, run in enumerate(runs)]
  pre_existing = np.isnan(time)
  per_run = [dict(run, final={name: value[r] for name, value in finals.items()},
                  onset_step=time[r] if observed[r] else None,
                  censored=not observed[r] and not pre_existing[r],
                  censor_step=None if observed[r] or pre_existing[r] else time[r],
                  pre_existing=bool(pre_existing[r]), diverged=bool(diverged[r]))
             for r, run in enumerate(runs)]
  out = {"n_runs": len(runs), "n_steps_logged": int(step.shape[1]),
         "first_step": int(step[0, 0]), "last_step": int(step[0, -1]), "onset": dict(onset),
         "layer_reduce": onset["layer_reduce"],
         "logged": {"scalars": list(scalars), "per_layer": list(per_layer)},
         "runs": per_run, "by_brake": grid_summary(runs, logs, onset),
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


def write_tables(workdir: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                 onset: Mapping[str, Any]) -> dict[str, str]:
  """Writes metrics.csv, onsets.csv and onset_summary.csv into `workdir`; returns `{name: path}`.

  Names: "metrics", "onsets", "onset_summary". The summary (written last by a sweep) is separate:
  `write_summary_json`.
  """
  def path(name: str) -> str:
    return os.path.join(workdir, f"{name}.csv")

  return {"metrics": write_metrics_csv(path("metrics"), runs, logs),
          "onsets": write_onsets_csv(path("onsets"), runs, logs, onset),
          "onset_summary": write_onset_summary_csv(path("onset_summary"), runs, logs, onset)}


def _parse_cell(cell: str) -> Any:
  """A run-key cell as int, else float, else the string."""
  for kind in (int, float):
    try:
      return kind(cell)
    except ValueError:
      pass
  return cell


def read_metrics_csv(path: str, scalars: Sequence[str] = ()) -> tuple[list[dict],
                                                                      dict[str, np.ndarray]]:
  """Reads a `write_metrics_csv` table back into `(runs, logs)` (float64 values).

  Columns before "step" are run keys (cells parsed as int, else float, else string); "layer"
  follows "step". Columns named in `scalars` become per-step scalars `[R, K]` (their first layer's
  value); every other column a per-layer metric `[R, K, L]` (a per-step scalar not named is then
  repeated over layers, which every layer reduction leaves unchanged).

  Raises ValueError naming `path` for a table that is not of that shape.
  """
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f)
    header = next(reader, None)
    cells = list(reader)
  if not header or "step" not in header or header[header.index("step") + 1:][:1] != ["layer"]:
    raise ValueError(f"{path}: not a metrics table (needs 'step' then 'layer' columns)")
  n_keys = header.index("step")
  names = header[n_keys + 2:]
  if not cells or not names or any(len(row) != len(header) for row in cells):
    raise ValueError(f"{path}: empty or ragged metrics table")
  run_ids = list(dict.fromkeys(tuple(row[:n_keys]) for row in cells))
  steps = list(dict.fromkeys(row[n_keys] for row in cells))
  n_layers = len(cells) // max(len(run_ids) * len(steps), 1)
  try:
    table = np.asarray([row[n_keys:] for row in cells], dtype=str).astype(np.float64)
    table = table.reshape(len(run_ids), len(steps), n_layers, len(names) + 2)
  except ValueError as err:
    raise ValueError(f"{path}: malformed metrics table ({err})") from None
  if (np.any(table[..., 0] != table[:1, :, :1, 0])
      or np.any(table[..., 1] != np.arange(n_layers))):
    raise ValueError(f"{path}: rows are not run x step x layer with the same steps for every run")
  runs = [dict(zip(header[:n_keys], map(_parse_cell, run_id))) for run_id in run_ids]
  logs = {"step": table[:, :, 0, 0].astype(np.int64)}
  for index, name in enumerate(names):
    values = table[..., index + 2]
    logs[name] = values[:, :, 0] if name in scalars else values
  return runs, logs

"""Side-by-side comparison of finished sweeps (workdirs written by `artifacts.write_all`).

A workdir is *finished* when it holds config.json, metrics.csv, onsets.csv and summary.json (the
sweep writes summary.json last). Every statistic is recomputed from metrics.csv with the onset
definition recorded in summary.json, through the same functions as the sweep's own tables
(`rc_jax.outputs.tables`), so workdirs written before a table format change compare the same way.

Matching grid points. Runs are matched on "brake" plus every other grid coordinate that takes more
than one value within some sweep (e.g. "learning_rate" when a sweep sweeps it). A coordinate that
is constant within every sweep is an attribute of its sweep (shown in its label), not a matching
key, so a sweep at lr 3e-3 compares with one at lr 1e-3 brake by brake. The comparison runs over
the UNION of the sweeps' grid points; a sweep without a point has NaN there (and a NaN
difference). Refused (`CompareError`): sweeps with different onset definitions (metric, threshold
or layer reduction: onset medians and layer-reduced values would not be comparable), a matching
key one sweep lacks, and a sweep sharing no grid point with the first (reference) sweep.

Outputs of `write_comparison` in the output directory:
  comparison.csv: one row per (grid point, quantity): matching keys, "quantity", one column per
    sweep label (its value) and one per other sweep "<label>-<reference label>" (the difference,
    empty where a difference is not meaningful). Quantities: n_runs, n_onset, onset_median (NaN when
    not reached), onset_median_bound (the lower bound when not reached), then per key metric
    `<metric>` (mean over seeds of the final value, layer-reduced) and `<metric>_std` (seed std).
  onset_vs_brake.png, final_metrics_vs_brake.png: the sweeps in one colour each.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax.outputs import plots, tables

REQUIRED_FILES = ("config.json", "metrics.csv", "onsets.csv", "summary.json")
KEY_METRICS = ("loss", "top_source_weight", "key_norm_cv", "effective_rank", "sink_excess_prior",
               "shared_sources", "effective_rank_routed")
_ONSET_QUANTITIES = ("n_runs", "n_onset", "onset_median", "onset_median_bound")
_NO_DIFFERENCE = ("onset_median_bound",)


class CompareError(ValueError):
  """A workdir or a set of workdirs that cannot be compared (one-line message)."""


@dataclasses.dataclass
class Sweep:
  """A finished sweep, read back.

  Attributes:
    label: its name in tables and legends.
    workdir: where it was read from.
    router: config.json's "router" (None if absent).
    runs, logs: as `rc_jax.outputs.tables` takes them (from metrics.csv).
    onset: the onset definition (summary.json).
    last_step: the last logged step.
  """
  label: str
  workdir: str
  router: str | None
  runs: list[dict]
  logs: dict[str, np.ndarray]
  onset: dict[str, Any]
  last_step: float


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as err:
    raise CompareError(f"{path}: unreadable JSON ({err})") from None


def load_sweep(workdir: str, label: str | None = None) -> Sweep:
  """Reads a finished sweep workdir (label defaults to the directory's name)."""
  if not os.path.isdir(workdir):
    raise CompareError(f"workdir {workdir} does not exist")
  missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(workdir, name))]
  if missing:
    raise CompareError(f"workdir {workdir} is unfinished or not a sweep workdir: no "
                       f"{', '.join(missing)}")
  config = _read_json(os.path.join(workdir, "config.json"))
  summary = _read_json(os.path.join(workdir, "summary.json"))
  onset = summary.get("onset")
  if not isinstance(onset, Mapping) or not {"metric", "threshold", "layer_reduce"} <= set(onset):
    raise CompareError(f"{workdir}/summary.json has no onset definition")
  scalars = (summary.get("logged") or {}).get("scalars", ())
  try:
    runs, logs = tables.read_metrics_csv(os.path.join(workdir, "metrics.csv"), scalars)
    tables.onset_series(logs, onset)
  except ValueError as err:
    raise CompareError(str(err).splitlines()[0]) from None
  if any("brake" not in run for run in runs):
    raise CompareError(f"{workdir}/metrics.csv has no 'brake' column")
  label = label or os.path.basename(os.path.normpath(workdir))
  return Sweep(label=label, workdir=workdir, router=config.get("router"), runs=runs, logs=logs,
               onset=dict(onset), last_step=float(logs["step"][0, -1]))


def load_sweeps(workdirs: Sequence[str], labels: Sequence[str] | None = None) -> list[Sweep]:
  """`load_sweep` of each workdir; labels default to directory names (full paths if those clash)."""
  if len(workdirs) < 2:
    raise CompareError(f"need at least two workdirs to compare, got {len(workdirs)}")
  if labels:
    if len(labels) != len(workdirs):
      raise CompareError(f"{len(labels)} labels for {len(workdirs)} workdirs")
  else:
    labels = [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(set(labels)) < len(labels):
      labels = [os.path.normpath(w) for w in workdirs]
  if len(set(labels)) < len(labels):
    raise CompareError(f"labels must be distinct, got {list(labels)}")
  return [load_sweep(w, label) for w, label in zip(workdirs, labels)]


def _onset_definition(onset: Mapping[str, Any]) -> tuple:
  return onset["metric"], float(onset["threshold"]), onset["layer_reduce"]


def match_keys(sweeps: Sequence[Sweep]) -> list[str]:
  """"brake" plus every grid coordinate with more than one value in some sweep (module doc).

  Raises CompareError on different onset definitions, a matching key some sweep lacks, or a sweep
  that shares no grid point with the first.
  """
  reference = sweeps[0]
  for sweep in sweeps[1:]:
    if _onset_definition(sweep.onset) != _onset_definition(reference.onset):
      raise CompareError(
          f"onset definitions differ: {reference.label}: {_onset_definition(reference.onset)}, "
          f"{sweep.label}: {_onset_definition(sweep.onset)} (metric, threshold, layer_reduce)")
  keys = ["brake"]
  for sweep in sweeps:
    for key in tables.grid_keys(sweep.runs):
      if key not in keys and len({run[key] for run in sweep.runs}) > 1:
        keys.append(key)
  for sweep in sweeps:
    lacking = [key for key in keys if any(key not in run for run in sweep.runs)]
    if lacking:
      raise CompareError(f"incompatible grids: {sweep.label} has no {lacking} coordinate")
  reference_points = set(tables.grid_points(reference.runs, keys))
  for sweep in sweeps[1:]:
    if not reference_points & set(tables.grid_points(sweep.runs, keys)):
      raise CompareError(f"incompatible brake grids: {sweep.label} shares no {tuple(keys)} point "
                         f"with {reference.label}")
  return keys


def key_metrics(sweeps: Sequence[Sweep]) -> list[str]:
  """The onset metric, then those of `KEY_METRICS` that some sweep logged."""
  logged = {name for sweep in sweeps for name in sweep.logs if name != "step"}
  metric = sweeps[0].onset["metric"]
  return [metric] + [name for name in KEY_METRICS if name in logged and name != metric]


def _point_stats(sweep: Sweep, keys: Sequence[str], names: Sequence[str]) -> dict[tuple, dict]:
  """Per grid point of `sweep` (on `keys`): the comparison quantities."""
  stats = {}
  for row in tables.grid_summary(sweep.runs, sweep.logs, sweep.onset, keys):
    point = tuple(row[key] for key in keys)
    values = {"n_runs": row["n_runs"], "n_onset": row["n_onset"],
              "onset_median": row["onset_median"], "onset_median_bound": row["onset_median_bound"],
              "onset_median_text": row["onset_median_text"]}
    for name in names:
      final = row["final"].get(name, {})
      values[name], values[f"{name}_std"] = final.get("mean"), final.get("std")
    stats[point] = values
  return stats


def _number(value: Any) -> float | int:
  """None as NaN; counts stay ints."""
  if value is None:
    return math.nan
  return value if isinstance(value, int) and not isinstance(value, bool) else float(value)


@dataclasses.dataclass
class Comparison:
  """The comparison table: `rows` as dicts keyed by `columns` (see the module doc)."""
  keys: list[str]
  labels: list[str]
  names: list[str]
  columns: list[str]
  rows: list[dict]
  points: list[tuple]
  stats: list[dict[tuple, dict]]


def compare(sweeps: Sequence[Sweep]) -> Comparison:
  """The per-grid-point quantities of every sweep on the union of grid points, with differences."""
  keys, names = match_keys(sweeps), key_metrics(sweeps)
  labels = [sweep.label for sweep in sweeps]
  stats = [_point_stats(sweep, keys, names) for sweep in sweeps]
  union = sorted({point for s in stats for point in s}, key=tables.point_sort_key)
  diffs = [f"{label}-{labels[0]}" for label in labels[1:]]
  quantities = list(_ONSET_QUANTITIES) + [q for name in names for q in (name, f"{name}_std")]
  rows = []
  for point in union:
    for quantity in quantities:
      values = [_number(s[point][quantity]) if point in s else math.nan for s in stats]
      row = dict(zip(keys, point), quantity=quantity, **dict(zip(labels, values)))
      meaningful = quantity not in _NO_DIFFERENCE and not quantity.endswith("_std")
      row.update((diff, values[i + 1] - values[0] if meaningful else None)
                 for i, diff in enumerate(diffs))
      rows.append(row)
  return Comparison(keys=keys, labels=labels, names=names,
                    columns=keys + ["quantity"] + labels + diffs, rows=rows, points=union,
                    stats=stats)


def digest(comparison: Comparison) -> str:
  """A printable table: per grid point, onsets (n_onset/n, KM median) per sweep and the
  differences (each sweep minus the first) of the onset median and each key metric's mean."""
  c = comparison
  reference = c.labels[0]
  header = list(c.keys)
  header += [f"onset[{label}]" for label in c.labels]
  for label in c.labels[1:]:
    header += [f"d_onset[{label}-{reference}]"] + [f"d_{name}" for name in c.names]
  lines = [header]
  for point in c.points:
    cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in point]
    for s in c.stats:
      cells.append(f"{s[point]['n_onset']}/{s[point]['n_runs']}: "
                   f"{s[point]['onset_median_text']}" if point in s else "-")
    for s in c.stats[1:]:
      for quantity in ["onset_median"] + c.names:
        a = _number(c.stats[0][point][quantity]) if point in c.stats[0] else math.nan
        b = _number(s[point][quantity]) if point in s else math.nan
        cells.append(f"{b - a:+.4g}" if math.isfinite(b - a) else "nan")
    lines.append(cells)
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def _groups(sweeps: Sequence[Sweep]) -> list[plots.Group]:
  """Plot series: per sweep (per learning rate when a sweep has several); the router and the
  learning rate are in the label when they differ between sweeps."""
  routers = {sweep.router for sweep in sweeps}
  lrs = [{run.get("learning_rate") for run in sweep.runs} for sweep in sweeps]
  lr_differs = all(len(v) == 1 for v in lrs) and len(set().union(*lrs)) > 1
  groups = []
  for sweep, lr in zip(sweeps, lrs):
    label = sweep.label + (f" ({sweep.router})" if len(routers) > 1 and sweep.router else "")
    if lr_differs and None not in lr:
      label += f" lr={float(next(iter(lr))):g}"
    groups += plots.sweep_groups(sweep.runs, sweep.logs, sweep.onset, label)
  return groups


def write_comparison(out: str, sweeps: Sequence[Sweep]) -> tuple[Comparison, dict[str, str]]:
  """Writes comparison.csv and the two figures into `out` (created); returns the table and paths."""
  comparison = compare(sweeps)
  os.makedirs(out, exist_ok=True)
  paths = {"comparison": os.path.join(out, "comparison.csv")}
  tables.write_csv(paths["comparison"], comparison.columns, comparison.rows)
  routers = {sweep.router for sweep in sweeps}
  label = plots.brake_label(next(iter(routers))) if len(routers) == 1 else (
      plots.DEFAULT_BRAKE_LABEL + " (units differ by router)")
  groups = _groups(sweeps)
  onset = sweeps[0].onset
  paths["onset_vs_brake"] = plots.onset_figure(
      os.path.join(out, "onset_vs_brake.png"), groups,
      budget=max(sweep.last_step for sweep in sweeps), description=plots.onset_description(onset),
      brake_label=label, title="Onset vs brake: " + " vs ".join(comparison.labels))
  paths["final_metrics_vs_brake"] = plots.final_metrics_figure(
      os.path.join(out, "final_metrics_vs_brake.png"), groups, comparison.names,
      layer_reduce=onset["layer_reduce"], brake_label=label,
      thresholds={onset["metric"]: float(onset["threshold"])},
      title="Final metrics: " + " vs ".join(comparison.labels), ncols=min(4, len(comparison.names)))
  return comparison, paths

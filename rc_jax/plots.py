"""Sweep figures, rendered headless with matplotlib's Agg canvas.

Figures are built with `matplotlib.figure.Figure` directly, not `pyplot`: nothing touches the
process-wide backend or pyplot's figure registry (safe in a notebook and under threads; there is
no figure to close), and PNGs are rendered by Agg. Each function writes one PNG atomically (see
`rc_jax.outputs.atomic_open`) and returns its path.

Inputs follow `rc_jax.outputs`: `runs` (one dict per run, with "brake" and optionally
"learning_rate") and `logs` (`step [R, K]`, scalars `[R, K]`, per-layer metrics `[R, K, L]`).
With more than one learning rate, runs are split by learning rate (panels or colours). Seeds are
averaged over their finite values only, so a diverged run drops out instead of poisoning a mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
import numpy as np

from rc_jax import outputs

_DPI = 120
_NO_DATA = "no finite values"


def _save(fig: Figure, path: str) -> str:
  with outputs.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=_DPI)
  return path


def _brakes(runs: Sequence[Mapping[str, Any]]) -> np.ndarray:
  return np.asarray([float(run["brake"]) for run in runs])


def _by_learning_rate(runs: Sequence[Mapping[str, Any]]) -> dict[float | None, np.ndarray]:
  """Run indices per learning rate (sorted); `{None: all runs}` when there is at most one."""
  groups: dict[float | None, list[int]] = {}
  for index, run in enumerate(runs):
    lr = run.get("learning_rate")
    groups.setdefault(None if lr is None else float(lr), []).append(index)
  if len(groups) == 1:
    return {None: np.arange(len(runs))}
  return {lr: np.asarray(groups[lr]) for lr in sorted(groups)}


def _lr_label(lr: float | None) -> str:
  return "" if lr is None else f"lr={lr:g}"


def _color(index: int) -> tuple:
  return matplotlib.colormaps["tab10"](index % 10)


def _by_brake(brakes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, list[dict]]:
  """Unique brakes and `outputs.describe` of `values` over the runs at each."""
  unique = np.unique(brakes)
  return unique, [outputs.describe(values[brakes == brake]) for brake in unique]


def _stat(stats: list[dict], key: str) -> np.ndarray:
  return np.asarray([np.nan if s[key] is None else s[key] for s in stats], np.float64)


def _brake_axis(ax, brakes: np.ndarray) -> None:
  """Labels the brake x axis; symlog when the positive brakes span a decade or more."""
  unique = np.unique(brakes)
  positive = unique[unique > 0]
  if positive.size >= 2 and positive.max() / positive.min() >= 10:
    ax.set_xscale("symlog", linthresh=float(positive.min()))
  if unique.size <= 10:
    ax.set_xticks(unique, labels=[f"{b:g}" for b in unique])
  ax.set_xlabel("positional brake β")


def _no_data(ax, message: str = _NO_DATA) -> None:
  ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="gray")


def _layer_label(layer_reduce: str | int) -> str:
  if layer_reduce in outputs.LAYER_REDUCTIONS:
    return f"{layer_reduce} over layers"
  return f"layer {layer_reduce}"


def _edges(centres: np.ndarray) -> np.ndarray:
  """Cell edges around increasing `centres` (midpoints; half a gap beyond each end)."""
  centres = np.asarray(centres, np.float64)
  if centres.size == 1:
    return centres[0] + np.array([-0.5, 0.5])
  mid = (centres[1:] + centres[:-1]) / 2
  return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _seed_mean_grid(values: np.ndarray, brakes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Unique brakes `[B]` and the mean over runs at each brake of `values [R, K]` -> `[B, K]`.

  Non-finite values are ignored; a cell with none is NaN.
  """
  unique = np.unique(brakes)
  finite = np.where(np.isfinite(values), values, np.nan)
  rows = []
  for brake in unique:
    block = finite[brakes == brake]
    count = np.sum(~np.isnan(block), axis=0)
    rows.append(np.where(count > 0, np.nansum(block, axis=0) / np.maximum(count, 1), np.nan))
  return unique, np.stack(rows)


def _colour_norm(values: np.ndarray) -> mcolors.Normalize | None:
  """A colour scale over the finite `values` (widened if constant); None when there are none."""
  finite = values[np.isfinite(values)]
  if not finite.size:
    return None
  low, high = float(finite.min()), float(finite.max())
  pad = 0.5 * max(abs(low), 1.0) if low == high else 0.0
  return mcolors.Normalize(low - pad, high + pad)


def phase_diagram(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                  metric: str, layer_reduce: str | int) -> str:
  """Heatmap of `metric` (layer-reduced) over brake (y, one row per brake) x step (x).

  Each cell is the mean over seeds (finite values only; missing cells grey). One panel per
  learning rate, sharing one colour scale and colorbar. Writes a PNG to `path`; returns `path`.
  """
  step, _, per_layer = outputs.split_logs(logs)
  values = outputs.reduce_layers(per_layer[metric], layer_reduce)
  brakes = _brakes(runs)
  panels = {lr: _seed_mean_grid(values[members], brakes[members])
            for lr, members in _by_learning_rate(runs).items()}
  norm = _colour_norm(np.concatenate([grid.ravel() for _, grid in panels.values()]))
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
  fig = Figure(figsize=(1.5 + 5.0 * len(panels), 4.0), layout="constrained")
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  mesh = None
  for ax, (lr, (unique, grid)) in zip(axes, panels.items()):
    mesh = ax.pcolormesh(_edges(step[0]), np.arange(unique.size + 1) - 0.5,
                         np.ma.masked_invalid(grid), cmap=cmap, norm=norm)
    ax.set_yticks(np.arange(unique.size), labels=[f"{b:g}" for b in unique])
    ax.set_xlabel("training step")
    ax.set_ylabel("positional brake β")
    ax.set_title(_lr_label(lr) or "mean over seeds")
    if norm is None:
      _no_data(ax)
  if norm is not None:
    fig.colorbar(mesh, ax=axes, label=f"{metric} ({_layer_label(layer_reduce)})")
  fig.suptitle(f"Phase diagram: {metric} vs brake and step")
  return _save(fig, path)


def onset_vs_brake(path: str, runs: Sequence[Mapping[str, Any]], onsets: Sequence[Any],
                   description: str = "") -> str:
  """Onset step vs brake: one point per run, a line through the per-brake means.

  Args:
    path: the PNG to write.
    runs: run dicts (with "brake", optionally "learning_rate": one colour per learning rate).
    onsets: `[R]` onset steps (e.g. `outputs.onset_steps`); inf, NaN or None = no onset. Runs
      without an onset are drawn as open triangles on the top edge ("no onset" in the legend);
      the y axis runs from 0 to just above the latest onset.
      The mean line averages the runs with an onset.
    description: appended to the title, e.g. "sink_mass > 0.5 (max over layers)".

  Returns:
    `path`.
  """
  onsets = np.asarray(onsets, np.float64)
  brakes = _brakes(runs)
  finite = onsets[np.isfinite(onsets)]
  top = max(1.05 * finite.max(), 1.0) if finite.size else 1.0
  fig = Figure(figsize=(6.5, 4.5), layout="constrained")
  ax = fig.subplots()
  for index, (lr, members) in enumerate(_by_learning_rate(runs).items()):
    _onset_series(ax, brakes[members], onsets[members], top, _color(index), _lr_label(lr))
  if not finite.size:
    _no_data(ax, "no run crossed the threshold")
  _brake_axis(ax, brakes)
  ax.set_ylim(0.0, top)
  ax.set_ylabel("onset step")
  ax.set_title("Onset step vs brake" + (f": {description}" if description else ""))
  ax.legend(fontsize="small", loc="lower right")
  return _save(fig, path)


def _onset_series(ax, brakes: np.ndarray, onsets: np.ndarray, top: float, color: tuple,
                  label: str) -> None:
  """Points, mean line and "no onset" markers (at height `top`) of one learning rate."""
  suffix = f" ({label})" if label else ""
  has = np.isfinite(onsets)
  if has.any():
    ax.scatter(brakes[has], onsets[has], color=color, alpha=0.6, label="run" + suffix)
    unique, stats = _by_brake(brakes[has], onsets[has])
    ax.plot(unique, _stat(stats, "mean"), "-", color=color, label="mean" + suffix)
  if (~has).any():
    ax.scatter(brakes[~has], np.full((~has).sum(), top), marker="^", facecolors="none",
               edgecolors=color, clip_on=False, s=60, label="no onset" + suffix)


def _final_values(logs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`[R]` last-step value of each per-step scalar and layer mean of each per-layer metric."""
  _, scalars, per_layer = outputs.split_logs(logs)
  finals = {name: value[:, -1] for name, value in scalars.items()}
  finals.update((name, outputs.reduce_layers(value[:, -1], "mean"))
                for name, value in per_layer.items())
  return finals


def final_metrics_vs_brake(path: str, runs: Sequence[Mapping[str, Any]],
                           logs: Mapping[str, Any]) -> str:
  """Small multiples: each metric's final-step value (layer mean) vs brake, mean +- std over seeds.

  One panel per per-step scalar and per-layer metric; `top_source_uniform` is not a panel of its
  own but the dashed "uniform baseline" in the `top_source_weight` panel. One colour per learning
  rate. Panels with no finite value say so. Writes a PNG to `path`; returns `path`.
  """
  finals = _final_values(logs)
  baseline = finals.pop("top_source_uniform") if "top_source_weight" in finals else None
  brakes = _brakes(runs)
  groups = _by_learning_rate(runs)
  ncols = min(4, len(finals))
  nrows = math.ceil(len(finals) / ncols)
  fig = Figure(figsize=(3.8 * ncols, 3.0 * nrows), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, (name, values) in zip(axes, finals.items()):
    for index, (lr, members) in enumerate(groups.items()):
      _mean_std_series(ax, brakes[members], values[members], _color(index), _lr_label(lr))
    if name == "top_source_weight" and baseline is not None:
      unique, stats = _by_brake(brakes, baseline)
      ax.plot(unique, _stat(stats, "mean"), "--", color="gray", label="uniform baseline")
    if not np.isfinite(values).any():
      _no_data(ax)
    if ax.get_legend_handles_labels()[1] and (name == "top_source_weight" or len(groups) > 1):
      ax.legend(fontsize="x-small")
    _brake_axis(ax, brakes)
    ax.set_title(name)
  for ax in axes[len(finals):]:
    ax.set_axis_off()
  fig.suptitle("Final-step metrics vs brake (layer mean; mean ± std over seeds)")
  return _save(fig, path)


def _mean_std_series(ax, brakes: np.ndarray, values: np.ndarray, color: tuple,
                     label: str) -> None:
  """Error bars (mean +- sample std over runs, finite values only) per brake; none if no data."""
  unique, stats = _by_brake(brakes, values)
  mean = _stat(stats, "mean")
  if np.isfinite(mean).any():
    ax.errorbar(unique, mean, yerr=np.nan_to_num(_stat(stats, "std")), color=color, marker="o",
                capsize=3, label=label or None)

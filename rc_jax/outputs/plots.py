"""Sweep figures, rendered headless with matplotlib's Agg canvas.

Figures are built with `matplotlib.figure.Figure` directly, not `pyplot`: nothing touches the
process-wide backend or pyplot's figure registry (safe in a notebook and under threads; there is
no figure to close), and PNGs are rendered by Agg. Each function writes one PNG atomically (see
`rc_jax.outputs.tables.atomic_open`) and returns its path. This module imports
`rc_jax.outputs.tables` (tables), never the reverse.

Inputs follow `rc_jax.outputs.tables`: `runs` (one dict per run, with "brake" and optionally
"learning_rate"), `logs` (`step [R, K]`, scalars `[R, K]`, per-layer metrics `[R, K, L]`) and
`onset` (metric, threshold, layer_reduce). Every per-layer value is reduced over layers the onset's
way (`onset["layer_reduce"]`, labelled on each figure). With more than one learning rate, runs are
split by learning rate (panels or colours). Seeds are averaged over their finite values only, so a
diverged run drops out instead of poisoning a mean. Onsets are censored data: figures show the
Kaplan-Meier median (`rc_jax.measurement.onsets`) and mark runs and medians without an onset
distinctly.

Brake axes are categorical: one evenly spaced position per brake value (sorted), so brake 0 and
log-spaced brakes both read well, with at most a handful of (rotated) labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np

from rc_jax.measurement import onsets as onsets_lib
from rc_jax.outputs import tables

_DPI = 120
_NO_DATA = "no finite values"
BRAKE_LABELS = {
    "attention": "brake β (per token of lag)",
    "graph": "brake β (per hop)",
    "ssm": "brake β (extra decay per step)",
    "rwkv": "brake β (extra decay per step)",
    "depth": "brake β (per layer of depth)",
}
DEFAULT_BRAKE_LABEL = "positional brake β"


def brake_label(router: str | None) -> str:
  """The brake axis label of `router` (its distance unit); generic for None or an unknown one."""
  return BRAKE_LABELS.get(router, DEFAULT_BRAKE_LABEL) if router else DEFAULT_BRAKE_LABEL


def _save(fig: Figure, path: str) -> str:
  with tables.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=_DPI)
  return path


def _color(index: int) -> tuple:
  return matplotlib.colormaps["tab10"](index % 10)


def _no_data(ax, message: str = _NO_DATA) -> None:
  ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="gray")


class BrakeAxis:
  """Categorical brake positions: the i-th smallest brake value sits at position i."""

  def __init__(self, brakes: Any):
    self.values = np.unique(np.asarray(brakes, np.float64))

  def __len__(self) -> int:
    return int(self.values.size)

  def positions(self, brakes: Any) -> np.ndarray:
    """Float positions of `brakes` (each must be one of `values`)."""
    return np.searchsorted(self.values, np.asarray(brakes, np.float64)).astype(np.float64)

  def apply(self, ax, label: str, which: str = "x", max_labels: int = 7) -> None:
    """Ticks at every brake, labels on at most `max_labels` evenly spread ones (ends included).

    On the x axis labels are rotated when there are more than four.
    """
    n = len(self)
    shown = _thinned(n, max_labels)
    labels = [f"{self.values[i]:.3g}" for i in shown]
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_ticks(np.arange(n), minor=True)
    axis.set_ticks(shown, labels=labels)
    if which == "x":
      ax.set_xlim(-0.5, n - 0.5)
      ax.set_xlabel(label)
      if shown.size > 4:
        ax.tick_params(axis="x", labelrotation=40)
        for text in ax.get_xticklabels():
          text.set_horizontalalignment("right")
          text.set_rotation_mode("anchor")
    else:
      ax.set_ylim(-0.5, n - 0.5)
      ax.set_ylabel(label)


def _thinned(n: int, max_labels: int) -> np.ndarray:
  """At most `max_labels` of `range(n)`, evenly stepped from 0, always ending at n - 1 (the step
  before the last may be up to twice as long)."""
  step = max(1, math.ceil((n - 1) / max(max_labels - 1, 1)))
  shown = list(range(0, n - 1, step)) + [n - 1]
  if len(shown) > 2 and shown[-1] - shown[-2] < step:
    del shown[-2]
  return np.asarray(shown)


def _offsets(n: int, width: float = 0.2) -> np.ndarray:
  """Small x offsets that keep `n` series at one brake apart."""
  return (np.arange(n) - (n - 1) / 2) * (width / max(n - 1, 1)) if n > 1 else np.zeros(1)


@dataclasses.dataclass
class Group:
  """Runs drawn as one series (one learning rate of a sweep, or one sweep of a comparison).

  Attributes:
    label: legend label ("" for none).
    brakes: `[R]` each run's brake.
    time: `[R]` onset step, or censoring step where not `observed`.
    observed: `[R]` whether the run had an onset.
    finals: name -> `[R]` final values (`tables.final_values`).
    index: `[R]` the runs' indices in their sweep.
  """
  label: str
  brakes: np.ndarray
  time: np.ndarray
  observed: np.ndarray
  finals: dict[str, np.ndarray]
  index: np.ndarray


def sweep_groups(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                 onset: Mapping[str, Any], label: str = "") -> list[Group]:
  """One `Group` per learning rate of a sweep (one group when there is at most one)."""
  time, observed = tables.onset_events(logs, onset)
  finals = tables.final_values(logs, onset["layer_reduce"])
  brakes = np.asarray([float(run["brake"]) for run in runs])
  by_lr: dict[float | None, list[int]] = {}
  for index, run in enumerate(runs):
    lr = run.get("learning_rate")
    by_lr.setdefault(None if lr is None else float(lr), []).append(index)
  if len(by_lr) == 1:
    by_lr = {None: list(range(len(runs)))}
  groups = []
  for lr in sorted(by_lr, key=lambda v: -math.inf if v is None else v):
    members = np.asarray(by_lr[lr])
    name = " ".join(part for part in (label, "" if lr is None else f"lr={lr:g}") if part)
    groups.append(Group(name, brakes[members], time[members], observed[members],
                        {key: value[members] for key, value in finals.items()}, members))
  return groups


def _colors(groups: Sequence[Group]) -> list:
  """One tab10 colour per group, in order."""
  return [_color(i) for i in range(len(groups))]


def _per_brake(axis: BrakeAxis, group: Group) -> list[tuple[int, np.ndarray]]:
  """`(position, run indices)` for each brake of `group`."""
  pos = axis.positions(group.brakes).astype(int)
  return [(p, np.flatnonzero(pos == p)) for p in np.unique(pos)]


def onset_figure(path: str, groups: Sequence[Group], *, budget: float, description: str = "",
                 brake_label: str = DEFAULT_BRAKE_LABEL, title: str = "Onset vs brake") -> str:
  """Censoring-aware onset vs brake: Kaplan-Meier median (top) and fraction with an onset (bottom).

  Top: each run's onset (dot) or, without one, an open triangle at its censoring step (the budget
  unless it diverged); per brake the Kaplan-Meier median (line and large marker), or where it is
  not reached a large open up-triangle at its lower bound. Bottom: n_onset / n_runs per brake.
  Pre-existing runs (above the threshold at step 0) have no onset and no point; they count in
  n_runs.

  Args:
    path: the PNG to write.
    groups: the series (one colour each; slightly offset at each brake).
    budget: the last logged step (top of the y range).
    description: the onset definition, appended to the title.
    brake_label: the x axis label.
    title: the title's start.

  Returns:
    `path`.
  """
  axis = BrakeAxis(np.concatenate([g.brakes for g in groups]))
  colors = _colors(groups)
  fig = Figure(figsize=(max(7.5, 2.5 + 0.35 * len(axis)), 6.8), layout="constrained")
  top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
  for group, color, dx in zip(groups, colors, _offsets(len(groups))):
    _onset_group(top, bottom, axis, group, color, dx)
  if not any(g.observed.any() for g in groups):
    _no_data(top, "no run crossed the threshold")
  high = 1.08 * max([budget, 1.0] + [float(np.max(g.time, initial=0.0, where=~np.isnan(g.time)))
                                      for g in groups])
  top.set_ylim(-0.03 * high, high)
  top.set_ylabel("onset step (line: Kaplan-Meier median)")
  top.axhline(budget, color="gray", lw=0.8, ls=":")
  handles = _onset_legend(groups, colors)
  fig.legend(handles=handles, fontsize="small", loc="outside lower center",
             ncols=min(len(handles), 4))
  bottom.set_ylim(-0.05, 1.05)
  bottom.set_ylabel("runs with\nan onset")
  axis.apply(bottom, brake_label)
  top.tick_params(axis="x", labelbottom=False)
  fig.suptitle(title + (f"\n{description}" if description else ""), fontsize="medium")
  return _save(fig, path)


def _onset_group(top, bottom, axis: BrakeAxis, group: Group, color, dx: float) -> None:
  positions, medians, bounds, fractions = [], [], [], []
  x = axis.positions(group.brakes) + dx
  for p, members in _per_brake(axis, group):
    x[members] += _offsets(members.size, width=0.12)  # runs side by side, not on top of each other
    stats = tables.onset_stats(group.time[members], group.observed[members])
    positions.append(p + dx)
    medians.append(np.nan if stats["onset_median"] is None else stats["onset_median"])
    bounds.append(np.nan if stats["onset_median_bound"] is None else stats["onset_median_bound"])
    fractions.append(stats["n_onset"] / members.size)
  seen = group.observed
  top.scatter(x[seen], group.time[seen], s=14, color=color, alpha=0.45, lw=0)
  top.scatter(x[~seen], group.time[~seen], s=22, marker="^", facecolors="none", edgecolors=color,
              alpha=0.6, clip_on=False)
  top.plot(positions, medians, "-o", color=color, ms=7)
  top.scatter(positions, bounds, s=90, marker="^", facecolors="white", edgecolors=color, lw=1.6,
              zorder=3, clip_on=False)
  bottom.plot(positions, fractions, "-o", color=color, ms=4)


def _onset_legend(groups: Sequence[Group], colors: Sequence) -> list[Line2D]:
  handles = [Line2D([], [], color=c, marker="o", label=g.label or "Kaplan-Meier median")
             for g, c in zip(groups, colors)]
  gray = "0.35"
  return handles + [
      Line2D([], [], ls="", marker="o", ms=4, color=gray, alpha=0.6, label="run: onset"),
      Line2D([], [], ls="", marker="^", ms=5, mfc="none", color=gray,
             label="run: no onset\n(censored at its last step)"),
      Line2D([], [], ls="", marker="^", ms=9, mfc="white", color=gray, mew=1.6,
             label="median not reached\n(lower bound)"),
  ]


def final_metrics_figure(path: str, groups: Sequence[Group], names: Sequence[str], *,
                         layer_reduce: str | int, brake_label: str = DEFAULT_BRAKE_LABEL,
                         thresholds: Mapping[str, float] | None = None,
                         title: str = "Final-step metrics vs brake", ncols: int = 4) -> str:
  """Small multiples: each metric's final value vs brake, mean +- sample std over seeds per group.

  A panel per name (missing in a group: that group draws nothing); `top_source_weight` also shows
  the group's `top_source_uniform` as a dashed "uniform baseline"; `thresholds` draws a dotted
  horizontal line (the onset threshold) in the named panels. Panels with no finite value say so.
  """
  names = list(names)
  axis = BrakeAxis(np.concatenate([g.brakes for g in groups]))
  colors = _colors(groups)
  ncols = max(1, min(ncols, len(names)))
  nrows = math.ceil(len(names) / ncols)
  fig = Figure(figsize=(4.0 * ncols, 3.3 * nrows + 0.6), layout="constrained")
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, name in zip(axes, names):
    drawn = False
    for group, color, dx in zip(groups, colors, _offsets(len(groups))):
      if name in group.finals:
        drawn |= _mean_std(ax, axis, group, group.finals[name], color, dx)
        if name == "top_source_weight" and "top_source_uniform" in group.finals:
          _mean_std(ax, axis, group, group.finals["top_source_uniform"], color, dx, dashed=True)
    if thresholds and name in thresholds:
      ax.axhline(thresholds[name], color="crimson", ls=":", lw=1.2)
    if not drawn:
      _no_data(ax)
    axis.apply(ax, brake_label)
    ax.set_ylabel(name)
  for ax in axes[len(names):]:
    ax.set_axis_off()
  handles = [Line2D([], [], color=c, marker="o", label=g.label) for g, c in zip(groups, colors)
             if g.label]
  if "top_source_weight" in names:
    handles.append(Line2D([], [], color="gray", ls="--", label="top_source_uniform (uniform)"))
  if thresholds:
    handles.append(Line2D([], [], color="crimson", ls=":", label="onset threshold"))
  if handles:
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5),
               fontsize="small")
  fig.suptitle(f"{title} (layers: {tables.layer_label(layer_reduce)}; mean ± std over seeds)")
  return _save(fig, path)


def _mean_std(ax, axis: BrakeAxis, group: Group, values: np.ndarray, color, dx: float,
              dashed: bool = False) -> bool:
  """Mean +- sample std (finite values only) per brake; returns whether anything was drawn."""
  positions, means, stds = [], [], []
  for p, members in _per_brake(axis, group):
    stats = tables.describe(values[members])
    positions.append(p + dx)
    means.append(np.nan if stats["mean"] is None else stats["mean"])
    stds.append(0.0 if stats["std"] is None else stats["std"])
  if not np.isfinite(means).any():
    return False
  if dashed:
    ax.plot(positions, means, "--", color=color, alpha=0.7, lw=1)
  else:
    ax.errorbar(positions, means, yerr=stds, color=color, marker="o", ms=4, capsize=2.5)
  return True


def _seed_mean_grid(values: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
  """Mean over the runs in each row of `values [R, K]`: `[n_rows, K]` (finite values, else NaN)."""
  finite = np.where(np.isfinite(values), values, np.nan)
  grid = np.full((n_rows, values.shape[1]), np.nan)
  for row in np.unique(rows):
    block = finite[rows == row]
    count = np.sum(~np.isnan(block), axis=0)
    grid[row] = np.where(count > 0, np.nansum(block, axis=0) / np.maximum(count, 1), np.nan)
  return grid


def _edges(centres: np.ndarray) -> np.ndarray:
  """Cell edges around increasing `centres` (midpoints; half a gap beyond each end)."""
  centres = np.asarray(centres, np.float64)
  if centres.size == 1:
    return centres[0] + np.array([-0.5, 0.5])
  mid = (centres[1:] + centres[:-1]) / 2
  return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _colour_norm(values: np.ndarray) -> mcolors.Normalize | None:
  """A colour scale over the finite `values` (widened if constant); None when there are none."""
  finite = values[np.isfinite(values)]
  if not finite.size:
    return None
  low, high = float(finite.min()), float(finite.max())
  pad = 0.5 * max(abs(low), 1.0) if low == high else 0.0
  return mcolors.Normalize(low - pad, high + pad)


def phase_diagram(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                  onset: Mapping[str, Any], brake_label: str = DEFAULT_BRAKE_LABEL) -> str:
  """Heatmap of the onset metric (layer-reduced the onset's way) over step (x) x brake (y).

  Each cell is the mean over seeds (finite values only; missing cells grey), one panel per
  learning rate with one shared colour scale. Drawn on top: the contour where the seed mean
  crosses the onset threshold; per brake the Kaplan-Meier median onset (diamond) or, when not
  reached, an open triangle at the budget (right edge); on the right, n_onset / n_runs per brake.
  Writes a PNG to `path`; returns `path`.
  """
  steps, series = tables.onset_series(logs, onset)
  threshold, metric = float(onset["threshold"]), onset["metric"]
  groups = sweep_groups(runs, logs, onset)
  axis = BrakeAxis([float(run["brake"]) for run in runs])
  grids = [_seed_mean_grid(series[g.index], axis.positions(g.brakes).astype(int), len(axis))
           for g in groups]
  norm = _colour_norm(np.concatenate([grid.ravel() for grid in grids]))
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
  fig = Figure(figsize=(1.8 + 5.6 * len(groups), 3.0 + 0.2 * max(len(axis), 6)),
               layout="constrained")
  axes = fig.subplots(1, len(groups), squeeze=False)[0]
  mesh = None
  for ax, group, grid in zip(axes, groups, grids):
    mesh = ax.pcolormesh(_edges(steps), np.arange(len(axis) + 1) - 0.5,
                         np.ma.masked_invalid(grid), cmap=cmap, norm=norm)
    _threshold_contour(ax, steps, grid, threshold)
    _onset_markers(ax, axis, group, steps)
    axis.apply(ax, brake_label, which="y", max_labels=16)
    ax.set_xlabel("training step")
    ax.set_title(group.label or "mean over seeds", fontsize="medium")
    if norm is None:
      _no_data(ax)
  if norm is not None:
    fig.colorbar(mesh, ax=axes, label=f"{metric} ({tables.layer_label(onset['layer_reduce'])}), "
                 "mean over seeds")
  fig.legend(handles=[
      Line2D([], [], color="red", lw=1.8, label=f"seed mean = threshold {threshold:g}"),
      Line2D([], [], ls="", marker="D", mfc="white", mec="black", label="median onset (KM)"),
      Line2D([], [], ls="", marker=">", mfc="white", mec="red", mew=1.5,
             label="median not reached by the budget")],
      loc="outside lower center", ncols=3, fontsize="small")
  fig.suptitle(f"Phase diagram: {metric} ({tables.layer_label(onset['layer_reduce'])}) vs brake "
               "and step; right axis: runs with an onset", fontsize="medium")
  return _save(fig, path)


def _threshold_contour(ax, steps: np.ndarray, grid: np.ndarray, threshold: float) -> None:
  finite = grid[np.isfinite(grid)]
  if min(grid.shape) < 2 or not (finite.size and finite.min() < threshold < finite.max()):
    return
  ax.contour(steps, np.arange(grid.shape[0]), np.ma.masked_invalid(grid), levels=[threshold],
             colors="red", linewidths=1.8)


def _onset_markers(ax, axis: BrakeAxis, group: Group, steps: np.ndarray) -> None:
  fractions = {}
  for p, members in _per_brake(axis, group):
    stats = tables.onset_stats(group.time[members], group.observed[members])
    fractions[p] = f"{stats['n_onset']}/{members.size}"
    if stats["onset_median_reached"]:
      ax.plot(stats["onset_median"], p, "D", mfc="white", mec="black", ms=7)
    else:
      ax.plot(steps[-1], p, ">", mfc="white", mec="red", mew=1.5, ms=9, clip_on=False)
  right = ax.secondary_yaxis("right")
  right.set_yticks(list(fractions), labels=list(fractions.values()), fontsize="small")


def onset_survival(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                   onset: Mapping[str, Any]) -> str:
  """Kaplan-Meier curves: fraction of runs without an onset vs step, one line per brake.

  One panel per learning rate; brakes coloured along viridis (legend outside), drawn from thick
  (smallest brake) to thin so identical curves stay visible as nested stripes. Each curve runs
  from the first logged step at 1 to the end of follow-up of its runs; pre-existing runs are not
  at risk of an onset and have no curve (a brake whose runs all are has none).
  """
  steps, _ = tables.onset_series(logs, onset)
  groups = sweep_groups(runs, logs, onset)
  axis = BrakeAxis([float(run["brake"]) for run in runs])
  cmap = matplotlib.colormaps["viridis"]
  fig = Figure(figsize=(1.8 + 5.0 * len(groups), 4.2), layout="constrained")
  axes = fig.subplots(1, len(groups), squeeze=False, sharey=True)[0]
  for ax, group in zip(axes, groups):
    for p, members in _per_brake(axis, group):
      members = members[~np.isnan(group.time[members])]
      if not members.size:
        continue
      km = onsets_lib.kaplan_meier(group.time[members], group.observed[members])
      x = np.concatenate([[steps[0]], km.step, [km.end]])
      y = np.concatenate([[1.0], km.survival, [km.at(km.end)]])
      share = p / max(len(axis) - 1, 1)
      ax.step(x, y, where="post", color=cmap(share), lw=4.5 - 3.3 * share,
              label=f"{axis.values[p]:.3g}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training step")
    ax.set_ylabel("runs without an onset (KM)")
    ax.set_title(group.label or "Kaplan-Meier", fontsize="medium")
  handles, labels = axes[-1].get_legend_handles_labels()
  fig.legend(handles, labels, title="brake β", loc="outside right upper", fontsize="small",
             ncols=1 if len(labels) <= 12 else 2)
  fig.suptitle(f"Onset survival: {onset['metric']} > {float(onset['threshold']):g} "
               f"({tables.layer_label(onset['layer_reduce'])})", fontsize="medium")
  return _save(fig, path)


def onset_description(onset: Mapping[str, Any]) -> str:
  """E.g. "onset: sink_excess > 1.5 (max over layers), staying above to the end"."""
  return (f"onset: {onset['metric']} > {float(onset['threshold']):g} "
          f"({tables.layer_label(onset['layer_reduce'])}), staying above to the end")


def onset_vs_brake(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                   onset: Mapping[str, Any], brake_label: str = DEFAULT_BRAKE_LABEL) -> str:
  """`onset_figure` of one sweep (a series per learning rate)."""
  step, _, _ = tables.split_logs(logs)
  return onset_figure(path, sweep_groups(runs, logs, onset), budget=float(step[0, -1]),
                      description=onset_description(onset), brake_label=brake_label)


def final_metrics_vs_brake(path: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
                           onset: Mapping[str, Any],
                           brake_label: str = DEFAULT_BRAKE_LABEL) -> str:
  """`final_metrics_figure` of one sweep: every logged name (but top_source_uniform, drawn as the
  baseline of top_source_weight), the onset metric first with its threshold line."""
  groups = sweep_groups(runs, logs, onset)
  names = [onset["metric"]] + [name for name in groups[0].finals
                               if name not in (onset["metric"], "top_source_uniform")]
  return final_metrics_figure(path, groups, names, layer_reduce=onset["layer_reduce"],
                              brake_label=brake_label,
                              thresholds={onset["metric"]: float(onset["threshold"])})

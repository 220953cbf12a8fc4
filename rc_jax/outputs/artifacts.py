"""Writes every output of a finished sweep: tables (`outputs.tables`) and figures (`outputs.plots`).

The one module that imports both, so tables never depend on figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from rc_jax.outputs import plots, tables


def router_of(extra: Mapping[str, Any] | None) -> str | None:
  """The router name from `extra["router"]`, else `extra["config"]["router"]`, else None."""
  extra = extra or {}
  config = extra.get("config")
  return extra.get("router") or (config.get("router") if isinstance(config, Mapping) else None)


TABLES = ("metrics", "onsets", "onset_summary")
FIGURES = ("phase_diagram", "onset_vs_brake", "onset_survival", "final_metrics_vs_brake")


def output_paths(workdir: str) -> dict[str, str]:
  """`{name: path}` of every file `write_all` writes into `workdir` (summary.json included)."""
  paths = {name: os.path.join(workdir, f"{name}.csv") for name in TABLES}
  paths.update((name, os.path.join(workdir, "figures", f"{name}.png")) for name in FIGURES)
  paths["summary"] = os.path.join(workdir, "summary.json")
  return paths


def write_all(workdir: str, runs: Sequence[Mapping[str, Any]], logs: Mapping[str, Any],
              onset: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes every sweep output into `workdir` and returns `{name: path}`.

  Files: metrics.csv, onsets.csv, onset_summary.csv, figures/phase_diagram.png,
  figures/onset_vs_brake.png, figures/onset_survival.png, figures/final_metrics_vs_brake.png, then
  summary.json (last, so a crash before it leaves no fresh summary). Names: the file stems.
  The brake axis is labelled for the router named in `extra` (`router_of`; generic without one).
  """
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  label = plots.brake_label(router_of(extra))

  def figure(name: str) -> str:
    return os.path.join(workdir, "figures", f"{name}.png")

  paths = tables.write_tables(workdir, runs, logs, onset)
  paths["phase_diagram"] = plots.phase_diagram(figure("phase_diagram"), runs, logs, onset, label)
  paths["onset_vs_brake"] = plots.onset_vs_brake(figure("onset_vs_brake"), runs, logs, onset,
                                                 label)
  paths["onset_survival"] = plots.onset_survival(figure("onset_survival"), runs, logs, onset)
  paths["final_metrics_vs_brake"] = plots.final_metrics_vs_brake(
      figure("final_metrics_vs_brake"), runs, logs, onset, label)
  paths["summary"] = tables.write_summary_json(os.path.join(workdir, "summary.json"), runs, logs,
                                                onset, extra)
  return paths

"""REPORT.md, its figures and tables, from the evaluated claims and the per-sweep values.

Layout of the report directory:

    REPORT.md
    figures/onset_vs_brake.png       censored median onset and share of seeds with an onset
    figures/signature.png            each signature metric, trained vs its three nulls
    figures/phase_<sweep>.png        copies of the family sweeps' phase diagrams
    tables/claims.csv                every row of every claim table
    tables/values.csv                per sweep x metric x (final | init | shuffled) x brake: mean, sd
"""

from __future__ import annotations

import csv
import datetime
import math
import os
import platform
import shutil

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from rc_jax import outputs
from rc_jax.report import claims as claims_lib
from rc_jax.report import stats
from rc_jax.report.suite import trained_sweeps

_NULL_COLOURS = {"trained": "#1f77b4", "init": "#bbbbbb", "prior": "#ff7f0e", "shuffled": "#2ca02c"}


def _seed_stats(values: list) -> tuple[float, float]:
  finite = np.array([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if not len(finite):
    return math.nan, math.nan
  return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else 0.0


def signature_figure(path: str, values: dict, cfg) -> str:
  """Bars per trained sweep and signature metric: trained vs init, prior-router and shuffled."""
  components = list(cfg.signature.items())
  sweeps = [s.name for s in trained_sweeps() if s.name in values]
  fig, axes = plt.subplots(1, len(components), figsize=(4.2 * len(components), 0.45 * len(sweeps)
                                                         + 1.6), squeeze=False)
  height = 0.2
  for ax, (label, component) in zip(axes[0], components):
    metric = component["metric"]
    for k, null in enumerate(("trained",) + claims_lib.NULLS):
      means, sds = [], []
      for name in sweeps:
        seeds = (claims_lib._seed_values(values[name], "final", metric) if null == "trained" else
                 claims_lib._null_values(values, name, null, metric))
        mean, sd = _seed_stats(seeds)
        means.append(mean)
        sds.append(sd)
      y = np.arange(len(sweeps)) + (k - 1.5) * height
      ax.barh(y, means, height, xerr=sds, color=_NULL_COLOURS[null], label=null)
    ax.set_yticks(np.arange(len(sweeps)), sweeps)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'max' if stats.direction(metric) > 0 else 'min'} over layers)")
    ax.set_title(label)
  axes[0][0].legend(loc="lower right", fontsize="small")
  fig.suptitle("Signature at brake 0, final step: trained model vs its nulls (mean ± seed sd)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def onset_figure(path: str, evaluated: list) -> str:
  """Per trained sweep: censored median onset (never = above the budget) and share with an onset."""
  rows = [row for claim in evaluated for row in claim["rows"]
          if row["claim"] == "2" and "progression" in row and not row.get("exploratory")]
  fig, axes = plt.subplots(2, math.ceil(len(rows) / 2), figsize=(3.4 * math.ceil(len(rows) / 2), 6),
                           squeeze=False)
  for ax, row in zip(axes.flat, rows):
    prog = row["progression"]
    x = np.arange(len(prog["brakes"]))
    budget = max([m for m in prog["medians"] if math.isfinite(m)] + [1.0])
    medians = [m if math.isfinite(m) else np.nan for m in prog["medians"]]
    ax.plot(x, medians, "o-", color="#1f77b4", label="median onset")
    never = [i for i, m in enumerate(prog["medians"]) if math.isinf(m)]
    ax.plot(never, [budget * 1.08] * len(never), "^", color="#d62728", label="never (censored)")
    ax2 = ax.twinx()
    ax2.bar(x, prog["fractions"], 0.5, color="#999999", alpha=0.3)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of seeds with an onset", fontsize="small")
    ax.set_xticks(x, [f"{b:g}" for b in prog["brakes"]], rotation=60, fontsize="small")
    ax.set_xlabel("brake beta")
    ax.set_ylabel("onset step")
    ax.set_title(f"{row['subject']}: {row['outcome']}", fontsize="medium")
  for ax in list(axes.flat)[len(rows):]:
    ax.axis("off")
  axes[0][0].legend(fontsize="x-small", loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _write_tables(directory: str, values: dict, evaluated: list) -> list[str]:
  os.makedirs(directory, exist_ok=True)
  claims_path = os.path.join(directory, "claims.csv")
  columns = ["claim", "subject", "what", "measurement", "nulls", "outcome", "sweeps"]
  with outputs.atomic_open(claims_path) as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for claim in evaluated:
      for row in claim["rows"]:
        writer.writerow(dict(row, sweeps=" ".join(row["sweeps"])))
  values_path = os.path.join(directory, "values.csv")
  with outputs.atomic_open(values_path) as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["sweep", "which", "metric", "brake", "learning_rate", "mean", "sd", "n"])
    for name, v in sorted(values.items()):
      grid = sorted({(r["brake"], r["learning_rate"]) for r in v["runs"]})
      for which in ("final", "init", "shuffled"):
        for metric in sorted(v[which]):
          for brake, lr in grid:
            seeds = [v[which][metric][i] for i, r in enumerate(v["runs"])
                     if r["brake"] == brake and r["learning_rate"] == lr]
            mean, sd = _seed_stats(seeds)
            writer.writerow([name, which, metric, brake, lr, f"{mean:.6g}", f"{sd:.6g}",
                             sum(s is not None for s in seeds)])
  return [claims_path, values_path]


def _table(rows: list) -> str:
  lines = ["| subject | measured | measurement (trained: mean ± seed sd; paired effect ± bound) "
           "| nulls | outcome |", "|---|---|---|---|---|"]
  for row in rows:
    cells = [row["subject"], row["what"], row["measurement"], row["nulls"],
             row["outcome"] + (f" ({row['reason']})" if row.get("reason") else "")]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  return "\n".join(lines)


def write_report(report_dir: str, preset: str, values: dict, evaluated: list, cfg,
                 commands: dict, report_command: str) -> str:
  """Writes REPORT.md, figures/ and tables/ under `report_dir`; returns the REPORT.md path."""
  figures = os.path.join(report_dir, "figures")
  os.makedirs(figures, exist_ok=True)
  signature_figure(os.path.join(figures, "signature.png"), values, cfg)
  onset_figure(os.path.join(figures, "onset_vs_brake.png"), evaluated)
  phase = []
  for sweep in trained_sweeps():
    source = os.path.join(commands[sweep.name][1], "figures", "phase_diagram.png")
    if os.path.exists(source):
      target = os.path.join(figures, f"phase_{sweep.name}.png")
      if os.path.abspath(source) != os.path.abspath(target):
        shutil.copyfile(source, target)
      phase.append(f"phase_{sweep.name}.png")
  _write_tables(os.path.join(report_dir, "tables"), values, evaluated)

  lines = [f"# Routing-collapse report ({preset} preset)", "",
           f"Generated {datetime.date.today().isoformat()} by `{report_command}` on "
           f"{platform.machine()} / {os.cpu_count()} CPU cores, JAX {jax.__version__} "
           f"({jax.default_backend()}). Every number below comes from the sweeps listed under "
           "*Commands*; every verdict from the rules stated with each claim and the margins in "
           "`configs/report.py`, fixed before any sweep ran. The claims are those of arXiv "
           "2606.22325, stated as hypotheses under test.", "",
           "| claim | verdict |", "|---|---|"]
  lines += [f"| {claim['title']} | **{claim['verdict']}** |" for claim in evaluated]
  lines += ["", "## How to read it", "",
            "- Measurements are taken at the final step of training on the fixed probe batch, at "
            "the smallest brake (0) unless stated, for each seed; a per-layer metric is reduced "
            "over layers in the direction the signature predicts (max for concentration and "
            "stratification, min for effective rank): *the signature appears in some layer*.",
            "- Nulls, per trained sweep and seed: **init** (the same model at step 0), **prior** "
            "(the same architecture, data, grid and steps trained with its router's content "
            "score removed: the positional-prior router), **shuffled** (the trained model on the "
            "probe with its tokens after BOS shuffled; node features permuted for graphs).",
            f"- Paired effects over seeds with a one-sided {cfg.confidence:.0%} Student-t bound; "
            "outcome *yes* = beyond the margin with the bound above 0, *no* = the bound below the "
            "margin, *inconclusive* = neither. Margins: " +
            "; ".join(f"{label} `{c['metric']}` {'relative ' if c['relative'] else ''}"
                      f"{c['margin']:g} ({'increase' if c['direction'] > 0 else 'decrease'})"
                      for label, c in cfg.signature.items()) + ".",
            "- Onsets are censored: a run without an onset within the budget counts as *never* "
            "(censored at the budget), never dropped; the median is censoring-aware.",
            "", "Figures: [signature vs nulls](figures/signature.png), "
            "[onset vs brake](figures/onset_vs_brake.png)" +
            "".join(f", [{p[6:-4]} phase diagram](figures/{p})" for p in phase) + ".", ""]
  for claim in evaluated:
    lines += [f"## {claim['title']} — {claim['verdict']}", "", f"*Hypothesis.* {claim['hypothesis']}",
              "", f"*Rule.* {claim['rule']}", ""]
    if claim.get("caveat"):
      lines += [f"*Caveat.* {claim['caveat']}", ""]
    lines += [_table(claim["rows"]), ""]
  lines += ["## Commands", "", "Each sweep, resumable and reused by the report:", "", "```"]
  lines += [command for command, _ in commands.values()]
  lines += ["```", "", "Regenerate everything (finished sweeps are reused):", "", "```",
            report_command, "```", ""]
  path = os.path.join(report_dir, "REPORT.md")
  with outputs.atomic_open(path) as f:
    f.write("\n".join(lines))
  return path

"""The signature over a real model's training: one checkpoint directory per training revision.

Pythia publishes its intermediate checkpoints as revisions `step0`, `step1`, ..., `step143000` of
each model; downloaded one directory per revision (README: "Training checkpoints"), a directory
whose name ends in `step<N>` (`pythia-160m/step1000`, `pythia-160m-step1000`) is revision N.
`experiments/pretrained.py --checkpoints=...` measures every revision exactly as it measures a
model (`experiment.measure_model`); when every directory is a revision, it also writes

  training.csv             step, component, metric, checkpoint / random init / shuffled (means over
                           probe sequences of the per-sequence values the verdicts pair)
  figures/training.png     each component against the training step, with its nulls
  summary.json "training"  the series and the concentration onset

The onset is the report's calibrated rule (`configs/report.py`): the first revision from which the
checkpoint's concentration (`hub_excess`, max over heads and layers, mean over sequences) stays
above the family's threshold and `rise` above its value at the first revision; a first revision
already above the threshold makes the sink pre-existing (no onset).
"""

from __future__ import annotations

import csv
import math
import os
import re
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from rc_jax.measurement import metrics
from rc_jax.pretrained import verdicts

_REVISION = re.compile(r"(?:^|[-_])step[-_]?(\d+)$")
COMPONENTS = (("concentration", "hub_excess"), ("collapse", "effective_rank"),
              ("stratification", "key_norm_cv"), ("Gu sink rate", "sink_rate"))
_BASELINES = (("none", "checkpoint"), ("random_init", "random init"),
              ("token_shuffle", "shuffled (descriptive)"))


def revision_step(path: str) -> int | None:
  """The training step of a checkpoint directory named `...step<N>`, else None."""
  match = _REVISION.search(os.path.basename(os.path.normpath(path)))
  return int(match.group(1)) if match else None


def model_label(path: str) -> str:
  """The model a revision directory belongs to: `pythia-160m` for `.../pythia-160m/step1000` and
  for `.../pythia-160m-step1000`."""
  path = os.path.normpath(path)
  stem = _REVISION.sub("", os.path.basename(path))
  return stem or os.path.basename(os.path.dirname(path))


def revision_steps(paths: Sequence[str]) -> list[int] | None:
  """Every directory's step when all are distinct revisions (at least two), else None."""
  steps = [revision_step(p) for p in paths]
  if len(steps) < 2 or any(s is None for s in steps) or len(set(steps)) != len(steps):
    return None
  return steps


def series(results: Sequence, steps: Sequence[int], cfg) -> dict[str, Any]:
  """The signature per revision (sorted by step) and the concentration onset.

  Returns `{"steps", "components": {label: {"metric", baseline: [per revision]}}, "onset":
  {"threshold", "rise", "step" (None: never or pre-existing), "status"}}`.
  """
  order = np.argsort(steps)
  steps = [int(steps[i]) for i in order]
  results = [results[i] for i in order]
  components = {}
  for label, metric in COMPONENTS:
    entry = {"metric": metric}
    for baseline, _ in _BASELINES:
      values = [verdicts.sequence_values(r.runs[baseline], metric) for r in results]
      entry[baseline] = [float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                         for v in values]
    components[label] = entry
  family = verdicts.FAMILY.get(results[0].info["model_type"], "attention")
  threshold = float(cfg.concentration.thresholds[family])
  rise = float(cfg.concentration.rise)
  concentration = np.asarray(components["concentration"]["none"], np.float32)
  onset = float(metrics.onset_step(np.asarray(steps, np.float32), concentration, threshold, rise))
  status = ("pre-existing" if math.isnan(onset) else "onset" if math.isfinite(onset)
            else "never")
  return {"steps": steps, "components": components,
          "onset": {"threshold": threshold, "rise": rise, "status": status,
                    "step": onset if math.isfinite(onset) else None}}


def write(training: dict, out_dir: str, name: str) -> None:
  """training.csv and figures/training.png of `series(...)` into `out_dir`."""
  with open(os.path.join(out_dir, "training.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["step", "component", "metric"] + [b for b, _ in _BASELINES])
    for label, entry in training["components"].items():
      for k, step in enumerate(training["steps"]):
        writer.writerow([step, label, entry["metric"]] + [entry[b][k] for b, _ in _BASELINES])
  figure(training, os.path.join(out_dir, "figures", "training.png"), name)


def figure(training: dict, file: str, name: str) -> None:
  """One panel per component against the training step (symlog x: step 0 included)."""
  os.makedirs(os.path.dirname(file), exist_ok=True)
  steps = training["steps"]
  fig, axes = plt.subplots(1, len(training["components"]), figsize=(4.2 * len(COMPONENTS), 3.8))
  for ax, (label, entry) in zip(axes, training["components"].items()):
    for (baseline, text), style in zip(_BASELINES, ("-o", "--s", ":^")):
      ax.plot(steps, entry[baseline], style, label=text)
    if label == "concentration":
      onset = training["onset"]
      ax.axhline(onset["threshold"], color="red", lw=1, label="onset threshold")
      if onset["step"] is not None:
        ax.axvline(onset["step"], color="red", ls=":", lw=1, label=f"onset {onset['step']:g}")
    ax.set_xscale("symlog", linthresh=max(1, min([s for s in steps if s > 0], default=1)))
    ax.set(title=f"{label}: {entry['metric']}", xlabel="training step")
    ax.legend(fontsize=7)
  fig.suptitle(f"{name}: the signature over training (mean over probe sequences); onset "
               f"{training['onset']['status']}")
  fig.tight_layout()
  fig.savefig(file, dpi=110)
  plt.close(fig)

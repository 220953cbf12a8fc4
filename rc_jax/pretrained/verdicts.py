"""Verdict rows for a pretrained model: the report's statistic, margins and thresholds, paired over
probe sequences.

A pretrained checkpoint has no seeds; its replicates are the probe sequences. For each component the
per-sequence value of the checkpoint is paired with that of the same architecture at random
initialisation on the same sequence (the init null), and compared by the report's rule
(`rc_jax.measurement.stats.compare`, margins from `configs/report.py`):

  concentration   hub_excess, max over heads, then max over layers; against the checkpoint's own
                  positional prior (uniform for attention without a brake), so the prior null is
                  built in; also read against the family's onset threshold: every sequence of the
                  checkpoint above it, every sequence at random init at or below it
  collapse        effective rank of the hidden states, min over layers (what a pretrained forward
                  returns; the trained sweeps read the routed output)
  stratification  key_norm_cv, mean over heads, max over layers

The token-shuffled probe is descriptive (a shuffled probe keeps [CLS] / BOS in place), as Gu et
al.'s sink rate (share of (layer, head) with `alpha_0 > 0.3`).
"""

from __future__ import annotations

import math

import numpy as np

from rc_jax.measurement import stats

# model_type -> the report family whose calibrated threshold applies
FAMILY = {"gpt2": "attention", "gpt_neox": "attention", "bert": "attention", "mamba": "ssm",
          "rwkv": "rwkv"}
_COMPONENTS = (("concentration", "hub_excess"), ("collapse", "effective_rank"),
               ("stratification", "key_norm_cv"))


def sequence_values(measurement, metric: str) -> np.ndarray:
  """`[sequences]`: `metric` per probe sequence, layers reduced in the signature's direction (Gu
  et al.'s sink rate: averaged over layers)."""
  per_layer = np.asarray(measurement.per_sequence[metric], np.float64)   # [layers, sequences]
  with np.errstate(all="ignore"):
    if metric == "sink_rate":
      return np.nanmean(per_layer, axis=0)
    return stats.signature_reduce(metric, per_layer.T)


def _fmt(x) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def verdict_rows(result, cfg) -> list[dict]:
  """One row per signature component of a measured model (`experiment.ModelResult`).

  Each row: `model`, `component`, `metric`, `trained` / `random_init` / `token_shuffle` (means over
  sequences), `effect`, `bound`, `mde`, `n`, `outcome` (the paired verdict), and for concentration
  `threshold`, `above` (share of sequences above it, checkpoint and random init) and `obtained`
  (yes: verdict yes and every checkpoint sequence above the threshold and every random-init one at
  or below it; no: verdict not yes and every checkpoint sequence at or below it; else mixed).
  """
  family = FAMILY.get(result.info["model_type"], "attention")
  rows = []
  for label, metric in _COMPONENTS:
    component = dict(cfg.signature[label])
    trained, init, shuffled = (sequence_values(result.runs[b], metric)
                               for b in ("none", "random_init", "token_shuffle"))
    r = stats.compare(list(trained), list(init), direction=stats.direction(metric),
                      margin=component["margin"], relative=component["relative"],
                      floor=component.get("floor", 0.0), confidence=cfg.confidence,
                      power=cfg.power)
    row = {"model": result.name, "component": label, "metric": metric,
           "trained": r["trained"], "random_init": r["null"],
           "token_shuffle": float(np.nanmean(shuffled)) if np.isfinite(shuffled).any() else None,
           "effect": r["effect"], "bound": r["bound"], "mde": r["mde"], "n": r["n"],
           "outcome": r["outcome"]}
    if label == "concentration":
      threshold = float(cfg.concentration.thresholds[family])
      above, above_init = np.mean(trained > threshold), np.mean(init > threshold)
      if r["outcome"] == stats.YES and above == 1.0 and above_init == 0.0:
        obtained = stats.YES
      elif r["outcome"] != stats.YES and above == 0.0:
        obtained = stats.NO
      else:
        obtained = "mixed"
      row.update(threshold=threshold, above=float(above), above_random_init=float(above_init),
                 obtained=obtained)
    else:
      row["obtained"] = r["outcome"]
    rows.append(row)
  gu = {b: float(np.nanmean(sequence_values(result.runs[b], "sink_rate")))
        for b in ("none", "random_init", "token_shuffle")}
  rows.append({"model": result.name, "component": "Gu et al. sink rate (descriptive)",
               "metric": "sink_rate", "trained": gu["none"], "random_init": gu["random_init"],
               "token_shuffle": gu["token_shuffle"], "outcome": "", "obtained": ""})
  return rows


def markdown(rows: list[dict]) -> str:
  """The verdict rows as a Markdown table."""
  lines = ["| model | component | checkpoint | random init | shuffled (descriptive) | paired "
           "effect ± bound (MDE, n) | threshold: share above (checkpoint / init) | outcome |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    effect = (f"{_fmt(r['effect'])} ± {_fmt(r['bound'])} (MDE {_fmt(r['mde'])}, n={r['n']})"
              if "effect" in r else "")
    threshold = (f"{r['threshold']:g}: {r['above']:.0%} / {r['above_random_init']:.0%}"
                 if "threshold" in r else "")
    lines.append(f"| {r['model']} | {r['component']} ({r['metric']}) | {_fmt(r['trained'])} | "
                 f"{_fmt(r['random_init'])} | {_fmt(r['token_shuffle'])} | {effect} | "
                 f"{threshold} | {r['obtained']} |")
  return "\n".join(lines)

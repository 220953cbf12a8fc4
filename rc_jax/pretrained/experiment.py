"""The pretrained-model experiment: every collapse metric on probe text vs matched null baselines.

For each checkpoint: the probe text is encoded with the checkpoint's tokenizer and measured three
ways (`analysis.BASELINES`): the checkpoint itself ("none"), the same architecture with random
weights ("random_init"), and the checkpoint on token-shuffled text ("token_shuffle").

`write_outputs` writes into a directory:

  metrics.csv      model, layer, head, metric, value, baseline   (head = -1: per-layer metric)
  summary.json     per model: architecture, size, probe size, metric means over layers and heads
                   and per-layer means, for each baseline
  comparison.csv   (several models) one row per model x baseline with the metric means
  training.csv, figures/training.png  (revisions of one model, `training`) the signature against
                   the training step, with the concentration onset
  verdicts.csv     one row per model x signature component: the report's paired verdict of the
                   checkpoint against its random initialisation over probe sequences
                   (`verdicts.verdict_rows`); also under "verdicts" in summary.json
  REPORT.md        the verdict table and how to read it
  figures/<model>/per_layer.png, key_norm_heatmap.png, norm_vs_mass.png
  figures/comparison.png  (several models)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from typing import Any, Sequence

import jax

from rc_jax import pretrained
from rc_jax.pretrained import analysis, figures, loading, probe, training, verdicts


@dataclasses.dataclass
class ModelResult:
  """All measurements of one checkpoint."""

  name: str
  info: dict[str, Any]
  runs: dict[str, analysis.Measurement]  # baseline -> measurement


def check_checkpoint(path: str) -> None:
  """Cheap up-front checks (directory, config, model_type, tokenizer) before anything is loaded."""
  hf_config = loading.read_config(path)
  model_type = hf_config.get("model_type")
  if model_type not in pretrained.ARCHITECTURES:
    raise ValueError(f"{os.path.join(path, loading.CONFIG_FILE)}: model_type {model_type!r} is not "
                     f"supported (supported: {', '.join(sorted(pretrained.ARCHITECTURES))})")
  if not os.path.isfile(os.path.join(path, loading.TOKENIZER_FILE)):
    raise FileNotFoundError(f"{os.path.join(path, loading.TOKENIZER_FILE)} not found: the probe "
                            "text is encoded with the checkpoint's own tokenizer")


def measure_model(model: pretrained.PretrainedModel, text: str, *, max_tokens: int,
                  max_sequences: int, seed: int, name: str | None = None) -> ModelResult:
  """Measures a loaded model (with a tokenizer) on `text` against its two null baselines."""
  if model.tokenizer is None:
    raise ValueError(f"{model.name} has no tokenizer: the probe text needs its "
                     f"{loading.TOKENIZER_FILE}")
  name = name or model.name
  batch = probe.encode(model.tokenizer, text, min(max_tokens, model.config.max_positions),
                       max_sequences)
  null_model = model.random_init(jax.random.key(seed))
  runs = {
      "none": analysis.measure(model, batch, "none", label=name),
      "random_init": analysis.measure(null_model, batch, "random_init", label=name),
      "token_shuffle": analysis.measure(model, probe.shuffle_tokens(batch, seed), "token_shuffle",
                                        label=name),
  }
  info = {
      "path": model.path, "model_type": model.model_type, "num_layers": model.config.num_layers,
      "num_heads": model.config.num_heads, "hidden_size": model.config.hidden_size,
      "num_params": model.num_params, "sequences": int(batch.token_ids.shape[0]),
      "max_sequence_length": int(batch.token_ids.shape[1]), "tokens": batch.num_tokens,
  }
  return ModelResult(name=name, info=info, runs=runs)


def unique_names(paths: Sequence[str]) -> list[str]:
  """`pretrained.default_name` of each directory, suffixed `-2`, `-3`, ... where they repeat."""
  names, seen = [], {}
  for path in paths:
    base = pretrained.default_name(path)
    seen[base] = seen.get(base, 0) + 1
    names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
  return names


def _finite(x: Any) -> Any:
  """JSON-safe: NaN / inf floats become None (recursively)."""
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return x


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_outputs(results: Sequence[ModelResult], out_dir: str, probe_info: dict[str, Any],
                  report_cfg, steps: Sequence[int] | None = None) -> None:
  """Writes the tables, summary, verdicts and figures of `results` into `out_dir` (which must
  exist); `report_cfg` is the report's config (`configs/report.py`: margins and thresholds).
  `steps`: the training step of each result when they are revisions of one model (`training`)."""
  rows = [row for result in results for row in verdicts.verdict_rows(result, report_cfg)]
  over_training = training.series(results, steps, report_cfg) if steps else None
  with open(os.path.join(out_dir, "metrics.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(("model", "layer", "head", "metric", "value", "baseline"))
    for result in results:
      for baseline in analysis.BASELINES:
        writer.writerows(analysis.tidy_rows(result.runs[baseline]))
  summary = {"probe": probe_info, "baselines": list(analysis.BASELINES), "models": {},
             "verdicts": rows}
  if over_training:
    summary["training"] = over_training
    path = results[0].info.get("path")
    training.write(over_training, out_dir, training.model_label(path) if path else results[0].name)
  for result in results:
    summary["models"][result.name] = {
        **result.info,
        "overall": {b: m.overall() for b, m in result.runs.items()},
        "per_layer": {b: {k: v.tolist() for k, v in m.layer_means().items()}
                      for b, m in result.runs.items()},
    }
  with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(_finite(summary), f, indent=1)
  _write_verdicts(rows, out_dir, probe_info, over_training)
  for result in results:
    fig_dir = os.path.join(out_dir, "figures", _safe(result.name))
    os.makedirs(fig_dir, exist_ok=True)
    figures.per_layer([result.runs[b] for b in analysis.BASELINES],
                      os.path.join(fig_dir, "per_layer.png"))
    figures.key_norm_heatmap(result.runs["none"], os.path.join(fig_dir, "key_norm_heatmap.png"))
    figures.norm_vs_mass(result.runs["none"], os.path.join(fig_dir, "norm_vs_mass.png"))
  if len(results) > 1:
    _write_comparison(results, out_dir)


_VERDICT_COLUMNS = ("model", "component", "metric", "trained", "random_init", "token_shuffle",
                    "effect", "bound", "mde", "n", "outcome", "threshold", "above",
                    "above_random_init", "obtained")


def _write_verdicts(rows: list[dict], out_dir: str, probe_info: dict[str, Any],
                    over_training: dict | None) -> None:
  with open(os.path.join(out_dir, "verdicts.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=_VERDICT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_finite(rows))
  text = ["# Routing collapse in pretrained models", "",
          f"Probe: {probe_info.get('source')} text, at most {probe_info.get('max_sequences')} "
          f"sequences of {probe_info.get('max_tokens')} tokens; random init and token shuffle "
          f"seed {probe_info.get('seed')}; dtype {probe_info.get('dtype')}.", "",
          "Each checkpoint is paired with the same architecture at random initialisation on the "
          "same probe sequences (the sequences are the replicates) and judged by the report's "
          "rule (`configs/report.py`): *yes* when the paired effect is beyond the component's "
          "margin with its one-sided bound above 0, *no* when its bound is below the margin. "
          "Concentration (`hub_excess`: per head, the largest share of the head's routing mass "
          "one source takes beyond its positional prior and the uniform share; max over heads, "
          "then layers) is also read against the family's calibrated onset threshold. The "
          "token-shuffled probe and Gu et al.'s sink rate are descriptive: a shuffled probe keeps "
          "[CLS] / BOS in place.", "", verdicts.markdown(rows), ""]
  if over_training:
    onset = over_training["onset"]
    text += ["## Over training", "",
             f"Revisions at steps {', '.join(str(s) for s in over_training['steps'])} "
             "([training.csv](training.csv), [figure](figures/training.png)). Concentration onset "
             f"under the report's rule (above {onset['threshold']:g} and {onset['rise']:g} above "
             f"the first revision, staying there): **{onset['status']}**"
             + (f" at step {onset['step']:g}." if onset["step"] is not None else "."), ""]
  with open(os.path.join(out_dir, "REPORT.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(text))


def _write_comparison(results: Sequence[ModelResult], out_dir: str) -> None:
  metric_names = list(results[0].runs["none"].overall())
  with open(os.path.join(out_dir, "comparison.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["model", "model_type", "num_params", "num_layers", "num_heads", "baseline"]
                    + metric_names)
    for r in results:
      for baseline in analysis.BASELINES:
        overall = r.runs[baseline].overall()
        writer.writerow([r.name, r.info["model_type"], r.info["num_params"], r.info["num_layers"],
                         r.info["num_heads"], baseline] + [overall[k] for k in metric_names])
  figures.comparison({r.name: r.runs for r in results}, {r.name: r.info for r in results},
                     os.path.join(out_dir, "figures", "comparison.png"))

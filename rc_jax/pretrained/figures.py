"""Figures of pretrained-model collapse measurements (matplotlib, Agg backend).

Each function takes `analysis.Measurement`s and writes one PNG:

  per_layer        sink rate and top-source weight per layer: checkpoint vs its null baselines
                   (random init, token-shuffled input) and the uniform top-source baseline.
  key_norm_heatmap key-norm coefficient of variation, layer x head.
  norm_vs_mass     key norm vs the mass a source receives (log scale), one point per usable source
                   (subsampled), coloured by layer; sources at position 0 outlined.
  comparison       several models: per-layer curves against relative depth, and model means vs size.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

_STYLE = {"none": ("checkpoint", "-", "o"), "random_init": ("random init", "--", "s"),
          "token_shuffle": ("shuffled tokens", ":", "^")}
_MAX_POINTS = 20000


def _save(fig, file: str) -> None:
  fig.tight_layout()
  fig.savefig(file, dpi=120)
  plt.close(fig)


def per_layer(measurements: Sequence, file: str) -> None:
  """Sink rate and top-source weight per layer, one line per baseline condition."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for m in measurements:
    label, line, marker = _STYLE[m.baseline]
    means = m.layer_means()
    layers = np.arange(len(means["sink_rate"]))
    axes[0].plot(layers, means["sink_rate"], line, marker=marker, label=label)
    axes[1].plot(layers, means["top_source_weight"], line, marker=marker, label=label)
    if m.baseline == "none":
      axes[1].plot(layers, means["top_source_uniform"], color="grey", lw=1, label="uniform")
  axes[0].set(title=f"{measurements[0].model}: sink rate (alpha_0 > 0.3)", xlabel="layer",
              ylabel="fraction of heads x sequences", ylim=(-0.02, 1.02))
  axes[1].set(title="top-source weight", xlabel="layer", ylabel="mean max_j A_ij", ylim=(0, 1.02))
  for ax in axes:
    ax.legend(fontsize=8)
  _save(fig, file)


def key_norm_heatmap(measurement, file: str) -> None:
  """Layer x head heatmap of the key-norm coefficient of variation."""
  values = measurement.per_head["key_norm_cv"]
  fig, ax = plt.subplots(figsize=(max(4, 0.35 * values.shape[1] + 2),
                                  max(3, 0.3 * values.shape[0] + 1.5)))
  image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
  fig.colorbar(image, ax=ax, label="key-norm CV")
  ax.set(title=f"{measurement.model}: key-norm stratification", xlabel="head", ylabel="layer")
  _save(fig, file)


def norm_vs_mass(measurement, file: str, seed: int = 0) -> None:
  """Scatter of key norm vs received mass over usable sources, coloured by layer."""
  m = measurement
  n = m.key_norms.size
  keep = slice(None)
  if n > _MAX_POINTS:
    keep = np.random.default_rng(seed).permutation(n)[:_MAX_POINTS]
  mass = np.maximum(m.received_mass[keep], 1e-8)
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  points = ax.scatter(m.key_norms[keep], mass, c=m.layer_of[keep], s=4, alpha=0.4, cmap="plasma")
  fig.colorbar(points, ax=ax, label="layer")
  first = m.source_of[keep] == 0
  ax.scatter(m.key_norms[keep][first], mass[first], s=14, facecolors="none", edgecolors="black",
             linewidths=0.6, label="source 0")
  ax.legend(fontsize=8, loc="lower right")
  ax.set_yscale("log")
  ax.set(title=f"{m.model}: key norm vs received mass", xlabel="key norm ||k_j||",
         ylabel="mean mass received alpha_j")
  _save(fig, file)


_COMPARED = (("sink_rate", "sink rate"), ("top_source_weight", "top-source weight"),
             ("key_norm_cv", "key-norm CV"), ("effective_rank", "effective rank"))


def comparison(by_model: dict, info: dict, file: str) -> None:
  """Per-layer curves vs relative depth for each model, and model means vs size per family.

  Args:
    by_model: model name -> {baseline: Measurement}.
    info: model name -> {"num_params": int, "model_type": str, ...}; one size curve per model type
      (GPT-2 sizes, Pythia sizes, ...), one line style per baseline.
    file: output PNG.
  """
  fig, axes = plt.subplots(2, len(_COMPARED), figsize=(4 * len(_COMPARED), 7.5))
  for name, runs in by_model.items():
    means = runs["none"].layer_means()
    depth = np.linspace(0, 1, len(means["sink_rate"]))
    for ax, (metric, _) in zip(axes[0], _COMPARED):
      ax.plot(depth, means[metric], marker=".", label=name)
  for ax, (metric, title) in zip(axes[0], _COMPARED):
    ax.set(title=title, xlabel="relative depth")
  axes[0][0].legend(fontsize=7)
  families = sorted({info[name]["model_type"] for name in by_model})
  colours = dict(zip(families, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
  for family in families:
    names = sorted((k for k in by_model if info[k]["model_type"] == family),
                   key=lambda k: info[k]["num_params"])
    sizes = [info[k]["num_params"] for k in names]
    for ax, (metric, _) in zip(axes[1], _COMPARED):
      for baseline in ("none", "random_init", "token_shuffle"):
        label, line, marker = _STYLE[baseline]
        values = [by_model[k][baseline].overall()[metric] for k in names]
        ax.plot(sizes, values, line, marker=marker, color=colours[family],
                label=f"{family}: {label}")
  for ax, (metric, title) in zip(axes[1], _COMPARED):
    ax.set(title=f"{title}, mean over layers", xlabel="parameters", xscale="log")
  axes[1][0].legend(fontsize=7)
  _save(fig, file)

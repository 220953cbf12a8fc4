"""Collapse metrics of a pretrained model on a token batch, per layer and head.

`measure(model, batch)` runs the forward layer by layer (`PretrainedModel.layers`; one layer's
weights and routing at a time for a streamed model) and reduces it with
`rc_jax.measurement.metrics`:

  routing metrics (per layer x head): each metric with `reduce=False` on the layer's routing gives
    one value per (sequence, head); the value reported is the mean over sequences (NaN-aware). So a
    head's `sink_rate` is the fraction of sequences whose `alpha_0 > 0.3`.
  hidden-state metrics (per layer): computed on each sequence's real tokens of
    `hidden_states[layer + 1]` (the layer's output, final-normed for the last decoder layer, as
    Hugging Face returns it), then averaged over sequences.

  per-sequence values (`SEQUENCE_METRICS`, per layer x sequence): what the verdicts pair over
    sequences; `hub_excess` is the max over heads of each sequence's per-head value (one sinking
    head is enough), `key_norm_cv` the mean over heads, `sink_rate` Gu et al.'s share of heads
    with `alpha_0 > 0.3`, `effective_rank` the hidden-state metric.
  `hub_excess` reads each routing against its layer's positional prior when the forward returns
  one (`LayerOutput.prior`: the SSM and RWKV decays), else against the uniform routing (the
  prior of attention without a brake).

`tidy_rows` flattens a `Measurement` into `(model, layer, head, metric, value, baseline)` rows, with
`head = -1` for the per-layer hidden-state metrics and `baseline` one of `BASELINES`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.measurement import metrics
from rc_jax.pretrained.probe import Batch
from rc_jax.routers.routing import Routing

ROUTING_METRICS = ("sink_rate", "sink_mass", "sink_excess", "hub_excess", "top_source_weight",
                   "top_source_uniform", "routing_entropy", "above_uniform_mass_count",
                   "key_norm_cv", "key_norm_log_spread", "norm_mass_correlation")
SEQUENCE_METRICS = ("hub_excess", "key_norm_cv", "sink_rate", "effective_rank")
HIDDEN_METRICS = ("effective_rank", "rank_collapse_residual", "massive_activation_ratio")
BASELINES = ("none", "random_init", "token_shuffle")
LAYER_HEAD = -1


@dataclasses.dataclass
class Measurement:
  """Metrics of one model under one input condition.

  Attributes:
    model: the model's name.
    baseline: "none" (the checkpoint on the probe text), "random_init" (same architecture, random
      weights) or "token_shuffle" (the checkpoint on token-shuffled text).
    per_head: metric -> `[layers, heads]` float array.
    per_layer: metric -> `[layers]` float array.
    per_sequence: metric -> `[layers, sequences]` float array (`SEQUENCE_METRICS`).
    key_norms, received_mass, layer_of, source_of: flat arrays over (layer, sequence, head,
      source) of every usable source: its key norm, the mean mass it receives, its layer and its
      position in the sequence (for the scatter figure).
  """

  model: str
  baseline: str
  per_head: dict[str, np.ndarray]
  per_layer: dict[str, np.ndarray]
  per_sequence: dict[str, np.ndarray]
  key_norms: np.ndarray
  received_mass: np.ndarray
  layer_of: np.ndarray
  source_of: np.ndarray

  def layer_means(self) -> dict[str, np.ndarray]:
    """Every metric as `[layers]`: head means of the per-head metrics, plus per-layer ones."""
    means = {name: _nanmean(values, axis=1) for name, values in self.per_head.items()}
    return {**means, **self.per_layer}

  def overall(self) -> dict[str, float]:
    """Every metric averaged over layers (and heads)."""
    return {name: float(_nanmean(values)) for name, values in self.layer_means().items()}


def _nanmean(x: np.ndarray, axis=None) -> np.ndarray:
  """NaN-ignoring mean that returns NaN (without a warning) where everything is NaN."""
  x = np.asarray(x, np.float64)
  count = np.sum(~np.isnan(x), axis=axis)
  total = np.nansum(x, axis=axis)
  return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@jax.jit
def _routing_metrics(routing: Routing, prior: Routing | None) -> dict[str, jax.Array]:
  """Each routing metric per (sequence, head), `[B, H]`, plus received mass and usability."""
  top, uniform = metrics.top_source_weight(routing, reduce=False)
  usable = jnp.any(routing.full_mask(), axis=-2)
  per_sequence = lambda r, p: metrics.hub_excess(r, p, reduce=False)   # [H] of one sequence
  return {
      "hub_excess": jax.vmap(per_sequence)(routing, prior),
      "sink_rate": metrics.sink_rate(routing, reduce=False),
      "sink_mass": metrics.sink_mass(routing, reduce=False),
      "sink_excess": metrics.sink_excess(routing, reduce=False),
      "top_source_weight": top,
      "top_source_uniform": uniform,
      "routing_entropy": metrics.routing_entropy(routing, reduce=False),
      "above_uniform_mass_count": metrics.above_uniform_mass_count(routing, reduce=False),
      "key_norm_cv": metrics.key_norm_cv(routing, reduce=False),
      "key_norm_log_spread": metrics.key_norm_log_spread(routing, reduce=False),
      "norm_mass_correlation": metrics.norm_mass_correlation(routing, reduce=False),
      "_received_mass": metrics.received_mass(routing),
      "_usable": usable,
  }


@jax.jit
def _hidden_metrics(hidden: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
  """Representation metrics `[B]` of each sequence's real tokens (`valid [B, N]`) of
  `hidden [B, N, D]`: one program for the batch, whatever the sequences' lengths."""
  return {
      "effective_rank": metrics.effective_rank(hidden, reduce=False, valid=valid),
      "rank_collapse_residual": metrics.rank_collapse_residual(hidden, reduce=False, valid=valid),
      "massive_activation_ratio": metrics.massive_activation_ratio(hidden, reduce=False,
                                                                   valid=valid),
  }


def measure(model, batch: Batch, baseline: str = "none", label: str | None = None) -> Measurement:
  """Forward `batch` through `model` and reduce every collapse metric per layer (and head).

  `label` names the model in the measurement (default: `model.name`).
  """
  valid = np.asarray(batch.attention_mask, bool)
  has_tokens = valid.any(axis=1)
  per_head = {name: [] for name in ROUTING_METRICS}
  per_layer = {name: [] for name in HIDDEN_METRICS}
  per_sequence = {name: [] for name in SEQUENCE_METRICS}
  norms, masses, layer_of, source_of = [], [], [], []
  for layer, out in enumerate(model.layers(batch.token_ids, batch.attention_mask)):
    routing, hidden = out.routing, out.hidden
    values = jax.device_get(_routing_metrics(routing, out.prior))
    for name in ROUTING_METRICS:
      per_head[name].append(_nanmean(values[name], axis=0))
    per_sequence["hub_excess"].append(np.nanmax(values["hub_excess"], axis=1))
    per_sequence["key_norm_cv"].append(_nanmean(values["key_norm_cv"], axis=1))
    per_sequence["sink_rate"].append(_nanmean(values["sink_rate"], axis=1))
    usable = values["_usable"]
    norms.append(np.asarray(routing.key_norms)[usable])
    masses.append(values["_received_mass"][usable])
    layer_of.append(np.full(int(usable.sum()), layer, np.int32))
    source_of.append(np.nonzero(usable)[-1].astype(np.int32))
    hidden_values = jax.device_get(_hidden_metrics(hidden, valid))
    for name in HIDDEN_METRICS:
      per_layer[name].append(_nanmean(hidden_values[name][has_tokens]))
    per_sequence["effective_rank"].append(
        np.where(has_tokens, hidden_values["effective_rank"], np.nan))
  return Measurement(
      model=label or model.name, baseline=baseline,
      per_head={k: np.stack(v) for k, v in per_head.items()},
      per_layer={k: np.asarray(v, np.float64) for k, v in per_layer.items()},
      per_sequence={k: np.asarray(v, np.float64) for k, v in per_sequence.items()},
      key_norms=np.concatenate(norms), received_mass=np.concatenate(masses),
      layer_of=np.concatenate(layer_of), source_of=np.concatenate(source_of))


def tidy_rows(measurement: Measurement) -> list[tuple]:
  """`(model, layer, head, metric, value, baseline)` rows; `head = -1` for per-layer metrics."""
  rows = []
  m = measurement
  for name, values in m.per_head.items():
    for layer, head in np.ndindex(values.shape):
      rows.append((m.model, layer, head, name, float(values[layer, head]), m.baseline))
  for name, values in m.per_layer.items():
    for layer, value in enumerate(values):
      rows.append((m.model, layer, LAYER_HEAD, name, float(value), m.baseline))
  return rows

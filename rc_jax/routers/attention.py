"""Attention over tokens (softmax or sigmoid): the first of the five routers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.routers import brake as brake_lib
from rc_jax.routers import scores
from rc_jax.routers.routing import Routing, masked_softmax, row_normalise


NORMALISATIONS = ("softmax", "sigmoid")


def softmax_attention(q, k, v, *, brake=0.0, causal: bool = True, score: str = "dot", mask=None,
                      content: bool = True, normalise: str = "softmax", slopes=None):
  """Attention with a positional brake, softmax- or sigmoid-normalised.

      l_ij  = s(q_i, k_j) - beta_h * (i - j)          (s = 0 when content=False)
      softmax: A_ij = softmax_j(l_ij)                  over admissible j
      sigmoid: A_ij = sigmoid(l_ij - log S)            over admissible j, rows NOT normalised
      out_i = sum_j A_ij v_j

  `content=False` is the router's positional prior: the content score is dropped and only the brake
  remains (uniform over admissible sources at `beta = 0`). Sigmoid attention follows Ramapuram et
  al. 2024 ("Theory, Analysis, and Best Practices for Sigmoid Self-Attention"): an elementwise
  sigmoid with the fixed bias `b = -log(n)`, here `n = S` the number of sources, so each row's mass
  starts near 1 however long the sequence; nothing forces a row to spend any mass (no sink needed to
  dump it), which is the escape route this switch opens.

  Args:
    q: `[..., T, D]` queries (heads are just leading dims: `[..., H, T, D]`).
    k: `[..., S, D]` keys.
    v: `[..., S, Dv]` values.
    brake: scalar `beta >= 0` (traced is fine). The distance is `i - j` (targets end-aligned to the
      sources), `|i - j|` when `causal=False`.
    causal: whether target i may only use sources j <= i.
    score: `"dot"` (`q.k/sqrt(D)`), `"distance"` (`-||q-k||^2/(2 sqrt D)`, the norm-aware form) or
      `"cosine"` (`q.k/||k||`, see `scores.cosine_logits`).
    mask: optional bool mask broadcastable to `[..., T, S]` (e.g. padding), combined with causality.
    content: False drops the content score (the positional prior; see above).
    normalise: `"softmax"` or `"sigmoid"`.
    slopes: None (one brake for every head) or `[H]` per-head multipliers, `beta_h = beta *
      slopes[h]`, for inputs with heads at axis -3 (`brake.head_slopes("alibi", H)`: ALiBi).

  Returns:
    `(out [..., T, Dv], Routing(weights [..., T, S], mask [T, S], key_norms [..., S], row_mass))`.
    Softmax: `row_mass` None. Sigmoid: `weights` are `A` row-normalised over admissible sources
    and `row_mass [..., T]` the row sums `sum_j A_ij` (0 for rows with no admissible source).
    `key_norms` are those of the keys the score would use, also when `content=False`.
  """
  scores.check_score(score)
  if normalise not in NORMALISATIONS:
    raise ValueError(f"unknown normalise {normalise!r}; expected one of {NORMALISATIONS}")
  if q.shape[-1] != k.shape[-1]:
    raise ValueError(f"q and k feature dims differ: q {q.shape} vs k {k.shape}")
  if k.shape[-2] != v.shape[-2]:
    raise ValueError(f"k and v source counts differ: k {k.shape} vs v {v.shape}")
  if slopes is not None:
    _check_slopes(slopes, q.shape)
  beta = brake_lib.check_brake(brake)
  n_targets, n_sources = q.shape[-2], k.shape[-2]

  if content:
    logits, key_norms = scores.content_logits(q, k, score)
  else:
    key_norms = scores.score_key_norms(k, score)
    leading = jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    logits = jnp.zeros(leading + (n_targets, n_sources), q.dtype)
  distance = brake_lib.lag_distance(n_targets, n_sources, causal=causal)
  logits = logits - brake_lib.head_brake(beta, slopes).astype(logits.dtype) * distance

  admissible = brake_lib.causal_mask(n_targets, n_sources) if causal else jnp.ones(
      (n_targets, n_sources), bool)
  if mask is not None:
    admissible = admissible & jnp.asarray(mask, bool)
  if normalise == "softmax":
    weights = masked_softmax(logits, admissible)
    out = jnp.einsum("...ts,...sd->...td", weights, v)
    return out, Routing(weights=weights, mask=admissible, key_norms=key_norms)
  bias = -jnp.log(jnp.float32(n_sources)).astype(logits.dtype)
  magnitudes = jnp.where(admissible, jax.nn.sigmoid(logits + bias), 0.0)
  out = jnp.einsum("...ts,...sd->...td", magnitudes, v)
  return out, Routing(weights=row_normalise(magnitudes, admissible), mask=admissible,
                      key_norms=key_norms, row_mass=jnp.sum(magnitudes, axis=-1))


def _check_slopes(slopes, q_shape) -> None:
  """`slopes` must be `[H]` with H the head axis (-3) of the queries, and concretely >= 0."""
  shape = jnp.shape(slopes)
  if len(q_shape) < 3 or shape != (q_shape[-3],):
    raise ValueError(f"slopes must have shape [n_heads] matching the head axis (-3) of q "
                     f"{q_shape}, got {shape}")
  if isinstance(slopes, (np.ndarray, list, tuple)):
    values = np.asarray(slopes, np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
      raise ValueError(f"slopes must be finite and >= 0, got {slopes!r}")


def split_heads(x_BxTxD: jax.Array, n_heads: int) -> jax.Array:
  """`[B, T, H*K] -> [B, H, T, K]`."""
  b, t, d = x_BxTxD.shape
  if d % n_heads:
    raise ValueError(f"width {d} is not divisible by n_heads={n_heads}")
  return x_BxTxD.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x_BxHxTxK: jax.Array) -> jax.Array:
  """`[B, H, T, K] -> [B, T, H*K]`."""
  b, h, t, k = x_BxHxTxK.shape
  return x_BxHxTxK.transpose(0, 2, 1, 3).reshape(b, t, h * k)

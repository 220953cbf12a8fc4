"""Softmax attention over tokens: the first of the five routers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers import brake as brake_lib
from rc_jax.routers import scores
from rc_jax.routers.routing import Routing, masked_softmax


def softmax_attention(q, k, v, *, brake=0.0, causal: bool = True, score: str = "dot", mask=None):
  """Softmax attention with a positional brake.

      A_ij = softmax_j(s(q_i, k_j) - beta * (i - j))   over admissible j
      out_i = sum_j A_ij v_j

  Args:
    q: `[..., T, D]` queries (heads are just leading dims).
    k: `[..., S, D]` keys.
    v: `[..., S, Dv]` values.
    brake: scalar `beta >= 0` (traced is fine). The distance is `i - j` (targets end-aligned to the
      sources), `|i - j|` when `causal=False`.
    causal: whether target i may only use sources j <= i.
    score: `"dot"` (`q.k/sqrt(D)`), `"distance"` (`-||q-k||^2/(2 sqrt D)`, the norm-aware form) or
      `"cosine"` (`q.k/||k||`, see `scores.cosine_logits`).
    mask: optional bool mask broadcastable to `[..., T, S]` (e.g. padding), combined with causality.

  Returns:
    `(out [..., T, Dv], Routing(weights [..., T, S], mask, key_norms [..., S]))`.
  """
  scores.check_score(score)
  if q.shape[-1] != k.shape[-1]:
    raise ValueError(f"q and k feature dims differ: q {q.shape} vs k {k.shape}")
  if k.shape[-2] != v.shape[-2]:
    raise ValueError(f"k and v source counts differ: k {k.shape} vs v {v.shape}")
  beta = brake_lib.check_brake(brake)
  n_targets, n_sources = q.shape[-2], k.shape[-2]

  logits, key_norms = scores.content_logits(q, k, score)
  distance = brake_lib.lag_distance(n_targets, n_sources, causal=causal)
  logits = logits - beta.astype(logits.dtype) * distance

  admissible = brake_lib.causal_mask(n_targets, n_sources) if causal else jnp.ones(
      (n_targets, n_sources), bool)
  if mask is not None:
    admissible = admissible & jnp.asarray(mask, bool)
  weights = masked_softmax(logits, admissible)
  out = jnp.einsum("...ts,...sd->...td", weights, v)
  return out, Routing(weights=weights, mask=admissible, key_norms=key_norms)


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

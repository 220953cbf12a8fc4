"""The reframing identity: dot-product softmax is distance softmax minus the key-norm term.

    softmax_j(q.k_j / sqrt(D)) == softmax_j(-||q - k_j||^2 / (2 sqrt D) + ||k_j||^2 / (2 sqrt D))

so the two routings agree exactly when all key norms are equal and drift apart as key norms
stratify. `weight_gap` measures that drift.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers.attention import softmax_attention


def weight_gap(q_TxD: jax.Array, k_SxD: jax.Array, *, causal: bool = False) -> jax.Array:
  """`max |A_dot - A_distance|` over all entries: 0 iff the two routings coincide."""
  v = jnp.zeros(k_SxD.shape[:-1] + (1,), k_SxD.dtype)
  _, dot = softmax_attention(q_TxD, k_SxD, v, causal=causal, score="dot")
  _, dist = softmax_attention(q_TxD, k_SxD, v, causal=causal, score="distance")
  return jnp.max(jnp.abs(dot.weights - dist.weights))


def keys_with_norms(key: jax.Array, norms_S: jax.Array, dim: int) -> jax.Array:
  """Random directions `[S, dim]` rescaled to the given norms `[S]`."""
  directions = jax.random.normal(key, (norms_S.shape[0], dim))
  directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
  return directions * norms_S[:, None]


def stratified_norms(n_sources: int, spread: float) -> jax.Array:
  """Key norms `[S]` spaced geometrically: `exp(linspace(0, spread, S))`, so `log(max/min) = spread`."""
  return jnp.exp(jnp.linspace(0.0, spread, n_sources))

"""Content scores shared by the attention-style routers, and rotary position embeddings.

The reframing identity (the paper's formula), with `b = 1 / (2 sqrt(D))`:

    softmax_j(q.k_j / sqrt(D)) == softmax_j(-b ||q - k_j||^2 + b ||k_j||^2)

so dot-product routing is Boltzmann routing over Euclidean distance with the `-b ||k_j||^2` term
deleted; it equals distance routing only when all key norms are equal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCORES = ("dot", "distance", "cosine")


def check_score(score: str, allowed=SCORES) -> None:
  if score not in allowed:
    raise ValueError(f"unknown score {score!r}; expected one of {allowed}")


def dot_logits(q_TxD: jax.Array, k_SxD: jax.Array) -> jax.Array:
  """`q.k / sqrt(D)`: `[..., T, D] x [..., S, D] -> [..., T, S]`."""
  d = q_TxD.shape[-1]
  return jnp.einsum("...td,...sd->...ts", q_TxD, k_SxD) / jnp.sqrt(jnp.float32(d)).astype(q_TxD.dtype)


def distance_logits(q_TxD: jax.Array, k_SxD: jax.Array) -> jax.Array:
  """Norm-aware (Boltzmann) logits `-||q - k||^2 / (2 sqrt(D))`: `[..., T, S]`.

  Expanded as `dot - (||q||^2 + ||k||^2) / (2 sqrt(D))`; the `||q||^2` term is constant per row and
  does not change the softmax, but is kept so the value is the true scaled distance.
  """
  d = q_TxD.shape[-1]
  scale = 2.0 * jnp.sqrt(jnp.float32(d)).astype(q_TxD.dtype)
  q_sq = jnp.sum(q_TxD * q_TxD, axis=-1)[..., :, None]
  k_sq = jnp.sum(k_SxD * k_SxD, axis=-1)[..., None, :]
  return dot_logits(q_TxD, k_SxD) - (q_sq + k_sq) / scale


def unit_keys(k_SxD: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Keys scaled to unit L2 norm."""
  norm = jnp.linalg.norm(k_SxD, axis=-1, keepdims=True)
  return k_SxD / jnp.maximum(norm, eps)


def cosine_logits(q_TxD: jax.Array, k_SxD: jax.Array) -> jax.Array:
  """`q . k / ||k||`: magnitude-blind keys.

  Scale: keys are unit vectors and no `1/sqrt(D)` is applied, which matches `"dot"` for keys whose
  entries have unit variance (norm ~ sqrt(D)): `q.k/sqrt(D) ~ q.k_hat`.
  """
  return jnp.einsum("...td,...sd->...ts", q_TxD, unit_keys(k_SxD))


def score_key_norms(k_SxD: jax.Array, score: str) -> jax.Array:
  """Norms `[..., S]` of the keys the named score uses (1 for `"cosine"`, whose keys are unit)."""
  if score == "cosine":
    return jnp.ones(k_SxD.shape[:-1], k_SxD.dtype)
  return jnp.linalg.norm(k_SxD, axis=-1)


def content_logits(q_TxD: jax.Array, k_SxD: jax.Array, score: str) -> tuple[jax.Array, jax.Array]:
  """Logits `[..., T, S]` of the named score and the norms `[..., S]` of the keys it uses."""
  check_score(score)
  logits = {"dot": dot_logits, "distance": distance_logits, "cosine": cosine_logits}[score](
      q_TxD, k_SxD)
  return logits, score_key_norms(k_SxD, score)


def rope_angles(positions: jax.Array, rotary_dim: int, base: float = 10000.0) -> jax.Array:
  """Rotation angles `[..., T, rotary_dim // 2]`: `pos * base^(-2i / rotary_dim)`."""
  inv_freq = base ** (-jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim)
  return jnp.asarray(positions, jnp.float32)[..., None] * inv_freq


def apply_rope(x_TxD: jax.Array, positions: jax.Array, *, base: float = 10000.0,
               rotary_dim: int | None = None) -> jax.Array:
  """Rotary position embedding, GPT-NeoX "rotate-half" convention.

  The first `rotary_dim` features (default: all) are rotated in pairs `(i, i + rotary_dim/2)` by
  angle `positions * base^(-2i/rotary_dim)`; the rest pass through. `x [..., T, D]`, `positions`
  broadcastable to `[..., T]`.
  """
  d = x_TxD.shape[-1]
  rotary_dim = d if rotary_dim is None else rotary_dim
  if rotary_dim % 2 or not 0 < rotary_dim <= d:
    raise ValueError(f"rotary_dim must be even and in (0, {d}], got {rotary_dim}")
  angles = rope_angles(positions, rotary_dim, base)
  cos = jnp.cos(angles).astype(x_TxD.dtype)
  sin = jnp.sin(angles).astype(x_TxD.dtype)
  half = rotary_dim // 2
  x1, x2, rest = x_TxD[..., :half], x_TxD[..., half:rotary_dim], x_TxD[..., rotary_dim:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)

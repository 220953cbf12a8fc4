"""The `Routing` record every router returns and every metric reads.

A router moves mass from sources to targets. Whatever the axis (tokens, graph nodes, time steps,
layers), it is summarised by three arrays:

  weights   [..., n_targets, n_sources]  routing mass, >= 0; rows sum to 1 over admissible sources
                                          (for implicit kernels: row-normalised magnitudes).
  mask      [..., n_targets, n_sources]  bool, broadcastable to `weights`: which sources a target
                                          may use (causal, neighbourhood, earlier layers).
  key_norms [..., n_sources]             norms of the source keys the content score uses.
  row_mass  [..., n_targets] or None     un-normalised mass each target reads before the row
                                          normalisation (non-normalising routers: the SSM kernel,
                                          sigmoid attention); None for normalising routers, where
                                          every admissible row carries mass 1.

Leading dims (batch, heads, layers, runs) are free: routers never assume them and metrics average
over all of them.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Routing:
  """Routing mass, admissibility mask, source key norms and (optionally) the per-row mass read
  before normalisation; a pytree (see module docstring)."""

  weights: jax.Array
  mask: jax.Array
  key_norms: jax.Array
  row_mass: jax.Array | None = None

  @property
  def n_targets(self) -> int:
    return self.weights.shape[-2]

  @property
  def n_sources(self) -> int:
    return self.weights.shape[-1]

  def full_mask(self) -> jax.Array:
    """`mask` broadcast to the shape of `weights`."""
    return jnp.broadcast_to(self.mask, self.weights.shape)


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to `mask`; exactly 0 outside it.

  Rows with no admissible entry return all zeros (never NaN).
  """
  logits = jnp.where(mask, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  unnorm = jnp.where(mask, jnp.exp(logits - jax.lax.stop_gradient(row_max)), 0.0)
  denom = jnp.sum(unnorm, axis=-1, keepdims=True)
  return unnorm / jnp.where(denom > 0, denom, 1.0)


def row_normalise(magnitudes: jax.Array, mask: jax.Array) -> jax.Array:
  """Non-negative `magnitudes` masked and divided by their row sum (zero rows stay zero)."""
  magnitudes = jnp.where(mask, magnitudes, 0.0)
  denom = jnp.sum(magnitudes, axis=-1, keepdims=True)
  return magnitudes / jnp.where(denom > 0, denom, 1.0)

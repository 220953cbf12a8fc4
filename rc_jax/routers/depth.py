"""Learned residuals over depth (AttnRes-style): each layer routes over the earlier layers' outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers import brake as brake_lib
from rc_jax.routers.routing import Routing, masked_softmax


def rms_normalise(x: jax.Array, scale: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
  """`x / sqrt(mean(x^2) + eps)` over the last axis, times `scale` if given."""
  y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
  return y if scale is None else y * scale


def depth_attention(query, sources, *, brake=0.0, norm_scale=None, content: bool = True):
  """Layer l's input as a softmax mixture of the outputs of the layers before it (AttnRes).

      key_i = RMSNorm(v_i)                        (norm-normalised by construction)
      A_i   = softmax_i(w_l . key_i - beta * (l - i)),   i = 0 .. l-1,  l = n_sources
      out   = sum_i A_i v_i

  The keys all have RMS norm 1 (times `norm_scale`), so the score cannot read key magnitude: this is
  the paper's "norm-normalised keys still concentrate" router. No `1/sqrt(D)` is applied (the
  pseudo-query `w_l` is learned and sets its own temperature). `content=False` is the prior: the
  pseudo-query is taken as 0, `A_i = softmax_i(-beta * (l - i))` (uniform at `beta = 0`, which is
  also where a zero-initialised pseudo-query starts, as in AttnRes).

  Args:
    query: `[..., D]` pseudo-query `w_l` of the target layer (usually a learned `[D]` vector).
    sources: `[..., S, D]` outputs `v_0 .. v_{S-1}` of the earlier layers (source 0 is the
      embedding), e.g. `[B, T, S, D]` for per-token mixing.
    brake: scalar `beta >= 0`; distance `l - i = S - i` (the previous layer is 1 away).
    norm_scale: optional `[D]` RMSNorm gain.
    content: False: the prior (see above).

  Returns:
    `(out [..., D], Routing(weights [..., 1, S], mask [1, S], key_norms [..., S]))`, with one target
    (layer l) per leading index; key_norms are the RMSNorm'd keys' norms, also when `content=False`.
  """
  if query.shape[-1] != sources.shape[-1]:
    raise ValueError(f"query and sources feature dims differ: query {query.shape} vs sources "
                     f"{sources.shape}")
  beta = brake_lib.check_brake(brake)
  n_sources = sources.shape[-2]
  keys = rms_normalise(sources, norm_scale)
  if content:
    logits = jnp.einsum("...d,...sd->...s", query, keys)[..., None, :]
  else:
    leading = jnp.broadcast_shapes(query.shape[:-1], sources.shape[:-2])
    logits = jnp.zeros(leading + (1, n_sources), sources.dtype)
  distance = (n_sources - jnp.arange(n_sources)).astype(logits.dtype)
  logits = logits - beta.astype(logits.dtype) * distance
  admissible = jnp.ones((1, n_sources), bool)
  weights = masked_softmax(logits, admissible)
  out = jnp.einsum("...s,...sd->...d", weights[..., 0, :], sources)
  key_norms = jnp.linalg.norm(keys, axis=-1)
  return out, Routing(weights=weights, mask=admissible, key_norms=key_norms)

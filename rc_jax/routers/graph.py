"""Graph attention over nodes (dense masked form, for small graphs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers import brake as brake_lib
from rc_jax.routers import scores
from rc_jax.routers.routing import Routing, masked_softmax

GRAPH_SCORES = ("dot", "distance", "cosine", "gat", "gatv2")
ONE_HOP_SCORES = ("gat", "gatv2")  # faithful GAT / GATv2: the 1-hop neighbourhood only


def _dot_last(x, a):
  """`x [..., N, D] . a [..., D] -> [..., N]` (a per head broadcasts against `x`'s node axis)."""
  return jnp.sum(x * jnp.asarray(a)[..., None, :], axis=-1)


def gat_logits(q_NxD, k_NxD, gat_vectors, negative_slope: float = 0.2):
  """GAT (Velickovic et al. 2018) score `e_ij = LeakyReLU(a_dst . q_i + a_src . k_j)`: `[.., N, N]`.

  `gat_vectors = (a_dst, a_src)`, each `[D]` or per head `[..., H, D]` (against `q, k` of shape
  `[..., H, N, D]`); `a = [a_dst || a_src]` is the paper's attention vector and `q = k = W h` its
  shared projection.
  """
  a_dst, a_src = gat_vectors
  target_term = _dot_last(q_NxD, a_dst)[..., :, None]
  source_term = _dot_last(k_NxD, a_src)[..., None, :]
  return jax.nn.leaky_relu(target_term + source_term, negative_slope)


def gatv2_logits(q_NxD, k_NxD, gatv2_vector, negative_slope: float = 0.2):
  """GATv2 (Brody et al. 2022) score `e_ij = a . LeakyReLU(q_i + k_j)`: `[..., N, N]`.

  `q = W_dst h`, `k = W_src h` (the two halves of GATv2's `W [h_i || h_j]`); `gatv2_vector` is `a`,
  `[D]` or per head `[..., H, D]`. The nonlinearity sits between `W` and `a`, so the ranking of
  sources can depend on the target ("dynamic" attention). Materialises `[..., N, N, D]`.
  """
  hidden = jax.nn.leaky_relu(q_NxD[..., :, None, :] + k_NxD[..., None, :, :], negative_slope)
  a = jnp.asarray(gatv2_vector)[..., None, None, :]
  return jnp.sum(hidden * a, axis=-1)


def graph_attention(q, k, v, hops, *, brake=0.0, max_hops: int = 1, score: str = "dot",
                    gat_vectors=None, gatv2_vector=None, negative_slope: float = 0.2,
                    content: bool = True):
  """Attention of each node over its hop neighbourhood, braked by hop distance.

      A_ij = softmax_j(s(q_i, k_j) - beta * hops_ij)   over j in the neighbourhood of i
      out_i = sum_j A_ij v_j

  The neighbourhood is `0 <= hops_ij <= max_hops` (self included) for the dot-style scores and the
  1-hop neighbourhood `hops_ij <= 1` (self-loops included, `max_hops` ignored) for `"gat"` /
  `"gatv2"`, as in those papers. `content=False` is the positional prior: `s = 0`, so
  `A_ij = softmax_j(-beta * hops_ij)` over the same neighbourhood (uniform at `beta = 0`).

  Args:
    q, k: `[..., N, D]` node queries and keys (per head: `[..., H, N, D]`).
    v: `[..., N, Dv]` node values.
    hops: int `[..., N, N]` shortest-path lengths (`hops_from_adjacency`): 0 on the diagonal (a node
      always attends to itself), `UNREACHABLE` (-1) where there is no path.
    brake: scalar `beta >= 0`; distance = hop count.
    max_hops: neighbourhood radius (>= 1) of the dot-style scores.
    score: `"dot"`, `"distance"`, `"cosine"` (as in `softmax_attention`), `"gat"` (`gat_logits`,
      needs `gat_vectors=(a_dst, a_src)`) or `"gatv2"` (`gatv2_logits`, needs `gatv2_vector=a`).
    negative_slope: LeakyReLU slope of gat / gatv2 (0.2 in both papers).
    content: False drops the score (the prior); gat / gatv2 vectors are then not needed.

  Returns:
    `(out [..., N, Dv], Routing(weights [..., N, N], mask [..., N, N], key_norms [..., N]))`.
    For gat / gatv2, key_norms are the `||k_j||` of the source vectors fed to the score.
  """
  scores.check_score(score, GRAPH_SCORES)
  if max_hops < 1:
    raise ValueError(f"max_hops must be >= 1, got {max_hops}")
  n = k.shape[-2]
  if q.shape[-2] != n or v.shape[-2] != n or hops.shape[-2:] != (n, n):
    raise ValueError(f"node counts differ: q {q.shape}, k {k.shape}, v {v.shape}, "
                     f"hops {hops.shape}")
  if q.shape[-1] != k.shape[-1]:
    raise ValueError(f"q and k feature dims differ: q {q.shape} vs k {k.shape}")
  if content and score == "gat" and gat_vectors is None:
    raise ValueError('score="gat" needs gat_vectors=(a_dst, a_src)')
  if content and score == "gatv2" and gatv2_vector is None:
    raise ValueError('score="gatv2" needs gatv2_vector=a')
  beta = brake_lib.check_brake(brake)

  if score in ONE_HOP_SCORES:
    key_norms = jnp.linalg.norm(k, axis=-1)
  else:
    key_norms = scores.score_key_norms(k, score)
  if not content:
    logits = jnp.zeros(jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (n, n), q.dtype)
  elif score == "gat":
    logits = gat_logits(q, k, gat_vectors, negative_slope)
  elif score == "gatv2":
    logits = gatv2_logits(q, k, gatv2_vector, negative_slope)
  else:
    logits, _ = scores.content_logits(q, k, score)

  hops = jnp.asarray(hops)
  radius = 1 if score in ONE_HOP_SCORES else max_hops
  admissible = (hops >= 0) & (hops <= radius)
  logits = logits - beta.astype(logits.dtype) * hops.astype(logits.dtype)
  weights = masked_softmax(logits, admissible)
  out = jnp.einsum("...ts,...sd->...td", weights, v)
  return out, Routing(weights=weights, mask=admissible, key_norms=key_norms)

"""Graph attention over nodes (dense masked form, for small graphs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers import brake as brake_lib
from rc_jax.routers import scores
from rc_jax.routers.routing import Routing, masked_softmax

GRAPH_SCORES = ("dot", "distance", "cosine", "gat")


def gat_logits(q_NxD, k_NxD, gat_vectors, negative_slope: float = 0.2):
  """GAT additive score `LeakyReLU(a_dst . q_i + a_src . k_j)`: `[..., N, N]`.

  `gat_vectors = (a_dst [D], a_src [D])` (Velickovic et al. 2018 with `q = k = W h`).
  """
  a_dst, a_src = gat_vectors
  target_term = jnp.einsum("...nd,d->...n", q_NxD, a_dst)[..., :, None]
  source_term = jnp.einsum("...nd,d->...n", k_NxD, a_src)[..., None, :]
  return jax.nn.leaky_relu(target_term + source_term, negative_slope)


def graph_attention(q, k, v, hops, *, brake=0.0, max_hops: int = 1, score: str = "dot",
                    gat_vectors=None, negative_slope: float = 0.2):
  """Attention of each node over the nodes within `max_hops`, braked by hop distance.

      A_ij = softmax_j(s(q_i, k_j) - beta * hops_ij)   over j with 0 <= hops_ij <= max_hops
      out_i = sum_j A_ij v_j

  Args:
    q, k: `[..., N, D]` node queries and keys.
    v: `[..., N, Dv]` node values.
    hops: int `[..., N, N]` shortest-path lengths (`hops_from_adjacency`): 0 on the diagonal (a node
      always attends to itself), `UNREACHABLE` (-1) where there is no path.
    brake: scalar `beta >= 0`; distance = hop count.
    max_hops: neighbourhood radius (>= 1).
    score: `"dot"`, `"distance"`, `"cosine"` (as in `softmax_attention`) or `"gat"` (additive
      `LeakyReLU(a_dst.q_i + a_src.k_j)`, needs `gat_vectors=(a_dst [D], a_src [D])`).

  Returns:
    `(out [..., N, Dv], Routing(weights [..., N, N], mask [..., N, N], key_norms [..., N]))`.
    For `"gat"`, key_norms are the `||k_j||` of the keys fed to the score.
  """
  scores.check_score(score, GRAPH_SCORES)
  if max_hops < 1:
    raise ValueError(f"max_hops must be >= 1, got {max_hops}")
  n = k.shape[-2]
  if q.shape[-2] != n or v.shape[-2] != n or hops.shape[-2:] != (n, n):
    raise ValueError(f"node counts differ: q {q.shape}, k {k.shape}, v {v.shape}, hops {hops.shape}")
  if q.shape[-1] != k.shape[-1]:
    raise ValueError(f"q and k feature dims differ: q {q.shape} vs k {k.shape}")
  beta = brake_lib.check_brake(brake)

  if score == "gat":
    if gat_vectors is None:
      raise ValueError('score="gat" needs gat_vectors=(a_dst, a_src)')
    logits = gat_logits(q, k, gat_vectors, negative_slope)
    key_norms = jnp.linalg.norm(k, axis=-1)
  else:
    logits, key_norms = scores.content_logits(q, k, score)

  hops = jnp.asarray(hops)
  admissible = (hops >= 0) & (hops <= max_hops)
  logits = logits - beta.astype(logits.dtype) * hops.astype(logits.dtype)
  weights = masked_softmax(logits, admissible)
  out = jnp.einsum("...ts,...sd->...td", weights, v)
  return out, Routing(weights=weights, mask=admissible, key_norms=key_norms)

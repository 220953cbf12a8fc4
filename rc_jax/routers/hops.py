"""Shortest-path hop counts for graph routers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

UNREACHABLE = -1  # hop count stored for node pairs with no path between them


def hops_from_adjacency(adjacency_NxN: jax.Array) -> jax.Array:
  """All-pairs shortest-path lengths (in edges) of an unweighted graph.

  Args:
    adjacency_NxN: `[..., N, N]`, nonzero where an edge j -> i exists (symmetrise it yourself for an
      undirected graph). The diagonal is ignored: a node is always 0 hops from itself.

  Returns:
    int32 `[..., N, N]` with `hops[i, j]` = length of the shortest path between i and j, 0 on the
    diagonal and `UNREACHABLE` (-1) where there is none. Computed by N-1 rounds of boolean frontier
    expansion (`O(N^4)` work at worst, meant for the small dense graphs this library trains on).
  """
  n = adjacency_NxN.shape[-1]
  adjacency = (adjacency_NxN != 0).astype(jnp.float32)
  eye = jnp.eye(n, dtype=bool)
  reached = jnp.broadcast_to(eye, adjacency.shape)
  hops = jnp.where(reached, 0, UNREACHABLE).astype(jnp.int32)

  def expand(step, carry):
    reached, hops = carry
    frontier = (adjacency @ reached.astype(jnp.float32)) > 0
    newly = frontier & ~reached
    return reached | newly, jnp.where(newly, step, hops)

  _, hops = jax.lax.fori_loop(1, max(n, 2), expand, (reached, hops))
  return hops

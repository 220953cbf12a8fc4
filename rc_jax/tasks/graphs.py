"""Stochastic block model: a node-classification graph generated in JAX."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from rc_jax.routers.hops import hops_from_adjacency
from rc_jax.tasks import checks


@flax.struct.dataclass
class GraphTask:
  """One graph with node features, labels and a train/test split.

  Attributes:
    features: float32 `[N, F]` node features (class mean + Gaussian noise).
    labels: int32 `[N]` class of each node.
    adjacency: float32 `[N, N]` 0/1, symmetric, zero diagonal.
    hops: int32 `[N, N]` shortest-path lengths (`hops_from_adjacency`; -1 where unreachable).
    train_mask: bool `[N]` training nodes.
    test_mask: bool `[N]` test nodes, the complement of `train_mask`.
  """

  features: jax.Array
  labels: jax.Array
  adjacency: jax.Array
  hops: jax.Array
  train_mask: jax.Array
  test_mask: jax.Array


def stochastic_block_model(key: jax.Array, *, n_nodes: int, n_classes: int, p_in: float,
                           p_out: float, feature_dim: int, feature_noise: float,
                           train_fraction: float = 0.5) -> GraphTask:
  """Samples a stochastic block model graph.

  Classes are balanced (node i gets class `i % n_classes`, then nodes are shuffled). Each pair of
  distinct nodes is linked independently with probability `p_in` within a class and `p_out` across.
  Class means are drawn from `N(0, I_F)`; a node's features are its class mean plus
  `feature_noise * N(0, I_F)`. A random `round(train_fraction * N)` nodes form the training split.

  Args:
    key: PRNG key.
    n_nodes: N (>= 1).
    n_classes: number of classes, 1 <= n_classes <= N.
    p_in: within-class edge probability in [0, 1].
    p_out: between-class edge probability in [0, 1].
    feature_dim: F (>= 1).
    feature_noise: standard deviation of the feature noise (>= 0).
    train_fraction: fraction of nodes in the training split, in [0, 1].

  Returns:
    A GraphTask with `[N, ...]` fields.
  """
  n_nodes = checks.check_int("n_nodes", n_nodes, 1)
  n_classes = checks.check_int("n_classes", n_classes, 1)
  if n_classes > n_nodes:
    raise ValueError(f"n_classes={n_classes} must not exceed n_nodes={n_nodes}")
  p_in = checks.check_float("p_in", p_in, 0.0, 1.0)
  p_out = checks.check_float("p_out", p_out, 0.0, 1.0)
  feature_dim = checks.check_int("feature_dim", feature_dim, 1)
  feature_noise = checks.check_float("feature_noise", feature_noise, 0.0)
  train_fraction = checks.check_float("train_fraction", train_fraction, 0.0, 1.0)

  label_key, edge_key, mean_key, noise_key, split_key = jax.random.split(key, 5)
  labels_N = jax.random.permutation(label_key, jnp.arange(n_nodes, dtype=jnp.int32) % n_classes)
  same_NxN = labels_N[:, None] == labels_N[None, :]
  edge_prob_NxN = jnp.where(same_NxN, p_in, p_out)
  upper_NxN = jnp.triu(jax.random.bernoulli(edge_key, edge_prob_NxN), k=1)
  adjacency_NxN = (upper_NxN | upper_NxN.T).astype(jnp.float32)

  means_CxF = jax.random.normal(mean_key, (n_classes, feature_dim))
  noise_NxF = jax.random.normal(noise_key, (n_nodes, feature_dim))
  features_NxF = means_CxF[labels_N] + feature_noise * noise_NxF

  n_train = round(train_fraction * n_nodes)
  train_nodes = jax.random.permutation(split_key, n_nodes)[:n_train]
  train_N = jnp.zeros((n_nodes,), bool).at[train_nodes].set(True)
  return GraphTask(features=features_NxF, labels=labels_N, adjacency=adjacency_NxN,
                   hops=hops_from_adjacency(adjacency_NxN), train_mask=train_N, test_mask=~train_N)

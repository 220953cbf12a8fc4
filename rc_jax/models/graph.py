"""Graph-attention node classifier (full-batch, dense masked attention)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.models.mixers import MLP
from rc_jax.routers.attention import merge_heads, split_heads
from rc_jax.models.output import ModelOutput


class GraphAttentionMixer(nn.Module):
  """Multi-head graph attention over the `max_hops` neighbourhood; routing `[H, N, N]`."""

  n_heads: int
  max_hops: int = 1
  score: str = "dot"

  @nn.compact
  def __call__(self, x_NxD, hops_NxN, brake):
    d = x_NxD.shape[-1]
    qkv = nn.Dense(3 * d, use_bias=False, name="qkv")(x_NxD)[None]
    q, k, v = (split_heads(part, self.n_heads)[0] for part in jnp.split(qkv, 3, axis=-1))
    gat_vectors = None
    if self.score == "gat":
      head_dim = d // self.n_heads
      gat_vectors = tuple(self.param(name, nn.initializers.normal(head_dim**-0.5), (head_dim,))
                          for name in ("gat_dst", "gat_src"))
    out, routing = routers.graph_attention(q, k, v, hops_NxN, brake=brake, max_hops=self.max_hops,
                                           score=self.score, gat_vectors=gat_vectors)
    return nn.Dense(d, use_bias=False, name="out")(merge_heads(out[None])[0]), routing


class GraphClassifier(nn.Module):
  """Features -> Dense -> `depth` pre-norm blocks of (graph attention + MLP) -> class logits."""

  n_classes: int
  model_config: object

  @nn.compact
  def __call__(self, features_NxF, hops_NxN, brake, *, with_routing: bool = False):
    cfg = self.model_config
    x = nn.Dense(cfg.width, name="embed")(features_NxF)
    routings, hidden = [], []
    for layer in range(cfg.depth):
      mixed, routing = GraphAttentionMixer(cfg.n_heads, cfg.max_hops, cfg.score,
                                           name=f"attn_{layer}")(
          nn.LayerNorm(name=f"norm_mix_{layer}")(x), hops_NxN, brake)
      x = x + mixed
      x = x + MLP(cfg.mlp_ratio, name=f"mlp_{layer}")(nn.LayerNorm(name=f"norm_mlp_{layer}")(x))
      if with_routing:
        routings.append(routing)
        hidden.append(x)
    logits = nn.Dense(self.n_classes, name="classify")(nn.LayerNorm(name="norm_out")(x))
    return ModelOutput(logits=logits, routings=tuple(routings), hidden=tuple(hidden))

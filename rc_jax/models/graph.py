"""Graph-attention node classifier (full-batch, dense masked attention)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.models.mixers import MLP
from rc_jax.models.output import ModelOutput
from rc_jax.routers.attention import merge_heads, split_heads


class GraphAttentionMixer(nn.Module):
  """Multi-head graph attention; routing `[H, N, N]`; returns `(y, routing, prior)`.

  Projections per score (per head, `Dh = D / H`):
    dot / distance / cosine: `q, k, v = W_q h, W_k h, W_v h` over the `max_hops` neighbourhood;
    gat (Velickovic et al. 2018): one projection `z = W h`, `q = k = v = z`, vectors `a_dst, a_src
      [H, Dh]`, 1-hop neighbourhood;
    gatv2 (Brody et al. 2022): `q = W_dst h`, `k = v = W_src h`, vector `a [H, Dh]`, 1-hop.
  Heads are concatenated and projected back to `D` (`out`). `content=False` routes by the prior
  (`-beta * hops` over the neighbourhood); with routing, `prior` is that prior on the same inputs.
  """

  n_heads: int
  max_hops: int = 1
  score: str = "dot"
  content: bool = True

  @nn.compact
  def __call__(self, x_NxD, hops_NxN, brake, *, with_routing: bool = False):
    d = x_NxD.shape[-1]
    head_dim = d // self.n_heads
    a_init = nn.initializers.normal(head_dim**-0.5)

    def heads(x):
      return split_heads(x[None], self.n_heads)[0]  # [N, D] -> [H, N, Dh]

    vectors = {}
    if self.score == "gat":
      q = k = v = heads(nn.Dense(d, use_bias=False, name="proj")(x_NxD))
      vectors["gat_vectors"] = tuple(self.param(name, a_init, (self.n_heads, head_dim))
                                     for name in ("gat_dst", "gat_src"))
    elif self.score == "gatv2":
      q = heads(nn.Dense(d, use_bias=False, name="dst")(x_NxD))
      k = v = heads(nn.Dense(d, use_bias=False, name="src")(x_NxD))
      vectors["gatv2_vector"] = self.param("gatv2_a", a_init, (self.n_heads, head_dim))
    else:
      qkv = nn.Dense(3 * d, use_bias=False, name="qkv")(x_NxD)
      q, k, v = (heads(part) for part in jnp.split(qkv, 3, axis=-1))
    options = dict(brake=brake, max_hops=self.max_hops, score=self.score)
    out, routing = routers.graph_attention(q, k, v, hops_NxN, content=self.content, **options,
                                           **vectors)
    y = nn.Dense(d, use_bias=False, name="out")(merge_heads(out[None])[0])
    if not with_routing:
      return y, None, None
    _, prior = routers.graph_attention(q, k, v, hops_NxN, content=False, **options)
    return y, routing, prior


class GraphClassifier(nn.Module):
  """Features -> Dense -> `depth` pre-norm blocks of (graph attention + MLP) -> class logits.

  With routing, per block: `routings` / `priors` its routing `[H, N, N]` and content-free prior,
  `hidden` the residual stream after the block and `routed` the mixer's output before the residual
  add (`[N, D]`).
  """

  n_classes: int
  model_config: object

  @nn.compact
  def __call__(self, features_NxF, hops_NxN, brake, *, with_routing: bool = False):
    cfg = self.model_config
    x = nn.Dense(cfg.width, name="embed")(features_NxF)
    routings, priors, hidden, routed = [], [], [], []
    for layer in range(cfg.depth):
      mixer = GraphAttentionMixer(cfg.n_heads, cfg.max_hops, cfg.score, cfg.content,
                                  name=f"attn_{layer}")
      mixed, routing, prior = mixer(nn.LayerNorm(name=f"norm_mix_{layer}")(x), hops_NxN, brake,
                                    with_routing=with_routing)
      x = x + mixed
      x = x + MLP(cfg.mlp_ratio, name=f"mlp_{layer}")(nn.LayerNorm(name=f"norm_mlp_{layer}")(x))
      if with_routing:
        routings.append(routing)
        priors.append(prior)
        hidden.append(x)
        routed.append(mixed)
    logits = nn.Dense(self.n_classes, name="classify")(nn.LayerNorm(name="norm_out")(x))
    return ModelOutput(logits=logits, routings=tuple(routings), priors=tuple(priors),
                       hidden=tuple(hidden), routed=tuple(routed))

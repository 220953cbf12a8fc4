"""AttnRes language model: every layer's input is a learned softmax mixture over earlier outputs."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.models.mixers import MLP, AttentionMixer, TokenEmbedding
from rc_jax.models.output import ModelOutput


class AttnResLayer(nn.Module):
  """`v_l = f_l(h_l)` with `f_l` = attention + MLP (each pre-normed, summed), no own residual."""

  model_config: object

  @nn.compact
  def __call__(self, h_BxTxD):
    cfg = self.model_config
    mixed, _, _ = AttentionMixer(cfg.n_heads, score="dot", rope=cfg.positions == "rope")(
        nn.LayerNorm(name="norm_mix")(h_BxTxD), 0.0)
    return mixed + MLP(cfg.mlp_ratio)(nn.LayerNorm(name="norm_mlp")(h_BxTxD + mixed))


class AttnResLM(nn.Module):
  """Learned residuals over depth (the router under study is `depth_attention`).

      v_0 = embed(tokens);   v_1 = f_0(v_0)
      h_l = depth_attention(w_l, [v_0 .. v_l], brake),   v_{l+1} = f_l(h_l)    l = 1 .. depth-1
      logits = unembed(LN(depth_attention(w_depth, [v_0 .. v_depth], brake)))

  The first layer reads the embedding alone (one source: nothing to route). The brake acts only on
  the depth routers (token attention inside `f_l` is unbraked). `routings` holds the `depth` depth
  routers, weights `[B, T, 1, l+1]`; `hidden` the mixtures `h_l` and the final one, `[B, T, D]`.
  """

  vocab_size: int
  model_config: object

  @nn.compact
  def __call__(self, tokens_BxT, brake, *, with_routing: bool = False):
    cfg = self.model_config
    v = TokenEmbedding(self.vocab_size, cfg.width, cfg.positions, name="embed")(tokens_BxT)
    sources = [v, AttnResLayer(cfg, name="layer_0")(v)]  # layer 0 reads the embedding alone
    routings, hidden = [], []
    for layer in range(1, cfg.depth + 1):
      # zero pseudo-queries: every layer starts as the uniform average of what came before
      query = self.param(f"query_{layer}", nn.initializers.zeros, (cfg.width,))
      norm_scale = self.param(f"key_scale_{layer}", nn.initializers.ones, (cfg.width,))
      h, routing = routers.depth_attention(query, jnp.stack(sources, axis=-2), brake=brake,
                                           norm_scale=norm_scale)
      if with_routing:
        routings.append(routing)
        hidden.append(h)
      if layer < cfg.depth:
        sources.append(AttnResLayer(cfg, name=f"layer_{layer}")(h))
    logits = nn.Dense(self.vocab_size, use_bias=False, name="unembed")(nn.LayerNorm(name="norm_out")(h))
    return ModelOutput(logits=logits, routings=tuple(routings), hidden=tuple(hidden))

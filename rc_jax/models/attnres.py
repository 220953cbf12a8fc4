"""AttnRes language model: each sublayer's input is a learned softmax mixture of earlier outputs."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.models.mixers import MLP, AttentionMixer, TokenEmbedding
from rc_jax.models.output import ModelOutput


class DepthRouter(nn.Module):
  """One AttnRes router: pseudo-query `w` (zero-initialised) and RMSNorm key gain, both `[D]`.

  Returns `(h, routing, prior)`; routing and prior are None unless `with_routing`. With
  `content=False` it has no pseudo-query and routes by the prior.
  """

  content: bool = True

  @nn.compact
  def __call__(self, sources_BxTxSxD, brake, *, with_routing: bool = False):
    width = sources_BxTxSxD.shape[-1]
    norm_scale = self.param("key_scale", nn.initializers.ones, (width,))
    query = (self.param("query", nn.initializers.zeros, (width,)) if self.content
             else jnp.zeros((width,), sources_BxTxSxD.dtype))
    h, routing = routers.depth_attention(query, sources_BxTxSxD, brake=brake, norm_scale=norm_scale,
                                         content=self.content)
    if not with_routing:
      return h, None, None
    _, prior = routers.depth_attention(query, sources_BxTxSxD, brake=brake, norm_scale=norm_scale,
                                       content=False)
    return h, routing, prior


class AttnResLM(nn.Module):
  """Full Attention Residuals (Kimi Team 2026) over sublayers; the router under study is
  `depth_attention`.

  Each of the `depth` blocks has two sublayers, token attention then MLP, so there are `L = 2 depth`
  sublayers `f_0 .. f_{L-1}`, each reading a depth mixture of every earlier output:

      v_0 = embed(tokens)
      h_s = depth_attention(w_s, [v_0 .. v_s], brake)   s = 1 .. L-1   (h_0 = v_0: nothing to route)
      v_{s+1} = f_s(LN(h_s))        f_s: attention (s even) or MLP (s odd); no residual of its own
      h_out = depth_attention(w_out, [v_0 .. v_L], brake);   logits = unembed(LN(h_out))

  Pseudo-queries start at zero (uniform mixing) and keys are RMSNorm'd with a learned gain, as in
  AttnRes. The brake acts only on the depth routers (the token attention inside `f_s` is unbraked
  softmax attention); `model.content=False` makes every depth router route by its prior.

  Routed layers (what `ModelOutput` lists): the `L - 1` sublayer routers `s = 1 .. L-1`, then the
  output router: `2 depth` in all (8 for depth 4). Per router: `routings` weights `[B, T, 1, S]`
  (`S = s + 1` sources), `priors` its `content=False` routing on the same sources, `routed` the
  mixture `h_s` and `hidden` the sublayer output `v_{s+1}` (`[B, T, D]`); for the output router both
  are `h_out`.
  """

  vocab_size: int
  model_config: object

  @nn.compact
  def __call__(self, tokens_BxT, brake, *, with_routing: bool = False):
    cfg = self.model_config
    sources = [TokenEmbedding(self.vocab_size, cfg.width, cfg.positions, name="embed")(tokens_BxT)]
    routings, priors, hidden, routed = [], [], [], []

    def route(name):
      h, routing, prior = DepthRouter(cfg.content, name=name)(
          jnp.stack(sources, axis=-2), brake, with_routing=with_routing)
      if with_routing:
        routings.append(routing)
        priors.append(prior)
        routed.append(h)
      return h

    for sublayer in range(2 * cfg.depth):
      h = sources[0] if sublayer == 0 else route(f"route_{sublayer}")
      x = nn.LayerNorm(name=f"norm_{sublayer}")(h)
      if sublayer % 2 == 0:
        v, _, _ = AttentionMixer(cfg.n_heads, score="dot", rope=cfg.positions == "rope",
                                 name=f"attn_{sublayer // 2}")(x, 0.0)
      else:
        v = MLP(cfg.mlp_ratio, name=f"mlp_{sublayer // 2}")(x)
      sources.append(v)
      if with_routing and sublayer > 0:
        hidden.append(v)
    h = route("route_out")
    if with_routing:
      hidden.append(h)
    logits = nn.Dense(self.vocab_size, use_bias=False, name="unembed")(
        nn.LayerNorm(name="norm_out")(h))
    return ModelOutput(logits=logits, routings=tuple(routings), priors=tuple(priors),
                       hidden=tuple(hidden), routed=tuple(routed))

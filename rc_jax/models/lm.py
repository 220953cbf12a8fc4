"""Causal language models built from pre-norm residual blocks around one router family."""

from __future__ import annotations

import flax.linen as nn

from rc_jax.models.mixers import MLP, TokenEmbedding, make_mixer
from rc_jax.models.output import ModelOutput


class Block(nn.Module):
  """`x + mixer(LN(x))` then `x + MLP(LN(x))`."""

  mixer_kind: str
  model_config: object
  layer: int = 0

  @nn.compact
  def __call__(self, x, brake, *, with_routing: bool = False):
    """Returns `(x_out, (routing, prior, mixed))`; routing and prior are None without routing."""
    mixed, routing, prior = make_mixer(self.mixer_kind, self.model_config, layer=self.layer,
                                       n_layers=self.model_config.depth)(
        nn.LayerNorm(name="norm_mix")(x), brake, with_routing=with_routing)
    x = x + mixed
    x = x + MLP(self.model_config.mlp_ratio)(nn.LayerNorm(name="norm_mlp")(x))
    return x, (routing, prior, mixed)


class RouterLM(nn.Module):
  """Token embedding -> `depth` blocks of (router + MLP) -> LayerNorm -> vocabulary logits.

  `__call__(tokens [B, T], brake, with_routing)`; with routing, `routings` / `priors` hold each
  block's routing and its content-free prior, `hidden` the residual stream after each block and
  `routed` the mixer's output before the residual add (`[B, T, D]`).
  """

  mixer_kind: str
  vocab_size: int
  model_config: object

  @nn.compact
  def __call__(self, tokens_BxT, brake, *, with_routing: bool = False):
    cfg = self.model_config
    x = TokenEmbedding(self.vocab_size, cfg.width, cfg.positions, name="embed")(tokens_BxT)
    routings, priors, hidden, routed = [], [], [], []
    for layer in range(cfg.depth):
      x, (routing, prior, mixed) = Block(self.mixer_kind, cfg, layer, name=f"block_{layer}")(
          x, brake, with_routing=with_routing)
      if with_routing:
        routings.append(routing)
        priors.append(prior)
        hidden.append(x)
        routed.append(mixed)
    logits = nn.Dense(self.vocab_size, use_bias=False, name="unembed")(nn.LayerNorm(name="norm_out")(x))
    return ModelOutput(logits=logits, routings=tuple(routings), priors=tuple(priors),
                       hidden=tuple(hidden), routed=tuple(routed))

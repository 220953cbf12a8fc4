"""Flax token mixers: each owns its parameters and calls one pure router with a traced brake.

Every mixer maps `x [B, T, D] -> (y [B, T, D], routing, prior)`: with `with_routing=True` the
`Routing` of its router and the content-free prior (the same router with `content=False` on the same
inputs and brake), else `(y, None, None)` (under jit the unused O(T^2) kernels are dropped anyway).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.routers import ssm as ssm_lib
from rc_jax.routers.attention import merge_heads, split_heads


class AttentionMixer(nn.Module):
  """Multi-head causal attention; routing weights `[B, H, T, T]`.

  `normalise` ("softmax" | "sigmoid") and `brake_slopes` ("shared" | "alibi": per-head brakes
  `beta * m_h / mean(m)`, see `routers.brake.head_slopes`) select the router; `content=False` makes
  the mixer route by its positional prior (the trainable prior-router null). The prior returned
  with the routing is `softmax_attention(..., content=False)` on the same inputs, brake, slopes and
  normalisation.
  """

  n_heads: int
  score: str = "dot"
  rope: bool = False
  content: bool = True
  normalise: str = "softmax"
  brake_slopes: str = "shared"

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    qkv = nn.Dense(3 * d, use_bias=False, name="qkv")(x_BxTxD)
    q, k, v = (split_heads(part, self.n_heads) for part in jnp.split(qkv, 3, axis=-1))
    if self.rope:
      positions = jnp.arange(x_BxTxD.shape[1])
      q, k = routers.apply_rope(q, positions), routers.apply_rope(k, positions)
    options = dict(brake=brake, causal=True, score=self.score, normalise=self.normalise,
                   slopes=routers.brake.head_slopes(self.brake_slopes, self.n_heads))
    out, routing = routers.softmax_attention(q, k, v, content=self.content, **options)
    y = nn.Dense(d, use_bias=False, name="out")(merge_heads(out))
    if not with_routing:
      return y, None, None
    _, prior = routers.softmax_attention(q, k, v, content=False, **options)
    return y, routing, prior


class SSMMixer(nn.Module):
  """Mamba-style block: `out(selective_ssm(silu(W_x x)) * silu(W_z x))`; routing `[B, T, T]`.

  (Mamba's short depthwise convolution is left out so that all token mixing goes through the
  router under study.)
  """

  state_size: int = 8
  expand: int = 2
  selective: bool = True
  backend: str = "scan"

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    inner = self.expand * d
    xz = nn.Dense(2 * inner, use_bias=False, name="in")(x_BxTxD)
    u, z = jnp.split(xz, 2, axis=-1)
    params = self.param("ssm", lambda key: ssm_lib.init_ssm_params(key, inner, self.state_size))
    y, routing = ssm_lib.selective_ssm(nn.silu(u), params, brake=brake, selective=self.selective,
                                       backend=self.backend, return_weights=with_routing)
    return nn.Dense(d, use_bias=False, name="out")(y * nn.silu(z)), routing, None  # TODO(prior)


class RWKVMixer(nn.Module):
  """RWKV-4 time mixing with token shift; `w = exp(decay)`; routing `[B, T, T]`."""

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    previous = jnp.pad(x_BxTxD, ((0, 0), (1, 0), (0, 0)))[:, :-1]

    def shifted(name):
      mix = self.param(f"mix_{name}", nn.initializers.constant(0.5), (d,))
      return nn.Dense(d, use_bias=False, name=name)(x_BxTxD * mix + previous * (1.0 - mix))

    r, k, v = shifted("r"), shifted("k"), shifted("v")
    # decay rates exp(decay) spread from ~0.05 to ~1 per step across channels at init
    decay = self.param("decay", lambda _, shape: jnp.linspace(-3.0, 0.0, shape[0]), (d,))
    bonus = self.param("bonus", nn.initializers.zeros, (d,))
    y, routing = routers.rwkv_mixer(r, k, v, jnp.exp(decay), bonus, brake=brake)
    return nn.Dense(d, use_bias=False, name="out")(y), routing if with_routing else None, None  # TODO(prior)


class TokenEmbedding(nn.Module):
  """`embed(tokens [B, T]) -> [B, T, width]`, plus learned positions if `positions == "learned"`."""

  vocab_size: int
  width: int
  positions: str

  @nn.compact
  def __call__(self, tokens_BxT):
    x = nn.Embed(self.vocab_size, self.width, name="tokens")(tokens_BxT)
    if self.positions == "learned":
      x = x + self.param("positions", nn.initializers.normal(0.02),
                         (tokens_BxT.shape[1], self.width))
    return x


class MLP(nn.Module):
  ratio: int = 4

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    return nn.Dense(d, name="down")(nn.gelu(nn.Dense(self.ratio * d, name="up")(x)))


def make_mixer(kind: str, model_config) -> nn.Module:
  """The token mixer named `kind` ("attention", "ssm", "rwkv") configured from `model_config`."""
  if kind == "attention":
    return AttentionMixer(n_heads=model_config.n_heads, score=model_config.score,
                          rope=model_config.positions == "rope", content=model_config.content,
                          normalise=model_config.normalise,
                          brake_slopes=model_config.brake_slopes)
  if kind == "ssm":
    return SSMMixer(state_size=model_config.state_size, expand=model_config.expand,
                    selective=model_config.selective, backend=model_config.ssm_backend)
  if kind == "rwkv":
    return RWKVMixer()
  raise ValueError(f"unknown mixer {kind!r}; expected attention, ssm or rwkv")

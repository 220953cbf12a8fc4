"""Flax token mixers: each owns its parameters and calls one pure router with a traced brake.

Every mixer maps `x [B, T, D] -> (y [B, T, D], routing, prior)`: with `with_routing=True` the
`Routing` of its router and the content-free prior (the same router with `content=False` on the same
inputs and brake), else `(y, None, None)` (under jit the unused O(T^2) kernels are dropped anyway).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.routers import ssm as ssm_lib
from rc_jax.routers.attention import merge_heads, split_heads


class AttentionMixer(nn.Module):
  """Multi-head causal softmax attention; routing weights `[B, H, T, T]`."""

  n_heads: int
  score: str = "dot"
  rope: bool = False

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    qkv = nn.Dense(3 * d, use_bias=False, name="qkv")(x_BxTxD)
    q, k, v = (split_heads(part, self.n_heads) for part in jnp.split(qkv, 3, axis=-1))
    if self.rope:
      positions = jnp.arange(x_BxTxD.shape[1])
      q, k = routers.apply_rope(q, positions), routers.apply_rope(k, positions)
    out, routing = routers.softmax_attention(q, k, v, brake=brake, causal=True, score=self.score)
    y = nn.Dense(d, use_bias=False, name="out")(merge_heads(out))
    return y, routing if with_routing else None, None  # TODO(prior): content=False routing


class SSMMixer(nn.Module):
  """Mamba block (`mamba_simple.Mamba`) around `selective_ssm`; routing `[B, H, T, T]`.

      u, z = W_in x                                   (z only with `gate`)
      u    = silu(causal_depthwise_conv(u))           (`conv_width` taps per channel + bias; 0: no
                                                       conv, u = silu(u))
      y    = selective_ssm(u, brake)                  (C = expand * width channels, `n_heads` heads,
                                                       low-rank Delta of rank `dt_rank`)
      out  = W_out (y * silu(z))                      (`gate=False`: W_out y)

  `dt_rank=0` means Mamba's "auto", `ceil(width / 16)`. With routing, the prior is the same
  `selective_ssm` call on the same u and brake with `content=False`; with `content=False` the mixer
  itself is that prior router (routing and prior coincide). The conv mixes the last `conv_width`
  tokens outside the router, as in Mamba (set 0 to route every token mix through the SSM).
  """

  state_size: int = 16
  expand: int = 2
  selective: bool = True
  backend: str = "scan"
  n_heads: int = 1
  conv_width: int = 4
  dt_rank: int = 0
  gate: bool = True
  content: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    inner = self.expand * d
    if inner % self.n_heads:
      raise ValueError(f"model.n_heads={self.n_heads} must divide the SSM's expand * width = "
                       f"{self.expand} * {d} = {inner} channels")
    if self.conv_width < 0 or self.dt_rank < 0:
      raise ValueError(f"model.conv_width and model.dt_rank must be >= 0, got {self.conv_width} "
                       f"and {self.dt_rank}")
    dt_rank = self.dt_rank or -(-d // 16)
    xz = nn.Dense((2 if self.gate else 1) * inner, use_bias=False, name="in")(x_BxTxD)
    u, z = jnp.split(xz, 2, axis=-1) if self.gate else (xz, None)
    if self.conv_width:
      u = self._causal_conv(u)
    u = nn.silu(u)
    params = self.param("ssm", lambda key: ssm_lib.init_ssm_params(
        key, inner, self.state_size, dt_rank=dt_rank))

    def ssm(content, return_weights):
      return ssm_lib.selective_ssm(u, params, brake=brake, selective=self.selective,
                                   backend=self.backend, n_heads=self.n_heads, content=content,
                                   return_weights=return_weights)

    y, routing = ssm(self.content, with_routing)
    prior = None
    if with_routing:
      prior = routing if not self.content else ssm(False, True)[1]
    if self.gate:
      y = y * nn.silu(z)
    return nn.Dense(d, use_bias=False, name="out")(y), routing, prior

  def _causal_conv(self, u_BxTxC):
    """Depthwise causal conv over time: `v_t[c] = bias[c] + sum_k w[k, c] u_{t-W+1+k}[c]` with
    zeros before t = 0 (PyTorch Conv1d(groups=C, padding=W-1) cut to T; same init: uniform in
    `+-1/sqrt(W)` for taps and bias)."""
    width, channels = self.conv_width, u_BxTxC.shape[-1]
    bound = width**-0.5
    init = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)
    kernel_WxC = self.param("conv_kernel", init, (width, channels))
    bias_C = self.param("conv_bias", init, (channels,))
    t = u_BxTxC.shape[-2]
    padded = jnp.pad(u_BxTxC, ((0, 0), (width - 1, 0), (0, 0)))
    return bias_C + sum(kernel_WxC[k] * padded[:, k:k + t] for k in range(width))


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
                          rope=model_config.positions == "rope")
  if kind == "ssm":
    return SSMMixer(state_size=model_config.state_size, expand=model_config.expand,
                    selective=model_config.selective, backend=model_config.ssm_backend,
                    n_heads=model_config.n_heads, conv_width=model_config.conv_width,
                    dt_rank=model_config.dt_rank, gate=model_config.gate,
                    content=model_config.content)
  if kind == "rwkv":
    return RWKVMixer()
  raise ValueError(f"unknown mixer {kind!r}; expected attention, ssm or rwkv")

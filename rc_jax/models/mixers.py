"""Flax token mixers: each owns its parameters and calls one pure router with a traced brake.

Every mixer maps `x [B, T, D] -> (y [B, T, D], routing, prior)`: with `with_routing=True` the
`Routing` of its router and the content-free prior (the same router with `content=False` on the same
inputs and brake), else `(y, None, None)` (under jit the unused O(T^2) kernels are dropped anyway).
"""

from __future__ import annotations

import functools

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
  """RWKV-4 time mixing; `w = exp(decay)`; routing `[B, H, T, T]` (H = `n_heads`).

  `out(rwkv_mixer(r, k, v, w, u))` with `r, k, v = Dense(mix * x_t + (1 - mix) * x_{t-1})`.
  Switches (defaults = RWKV-4): `token_shift=False` feeds `x_t` itself to r, k, v (no `mix_*`
  parameters, no `x_{t-1}` dependence); `gate=False` drops the receptance (`out = wkv`);
  `bonus=False` has no `bonus` parameter and passes `u = w` (no current-token special case, see
  `routers.rwkv`); `content=False` routes by position only (k = 0), the prior-router null.

  Initialisation follows RWKV-4 (BlinkDL/RWKV-LM, RWKV-v4), with `r0 = layer / (n_layers - 1)`
  (0 for one layer), `r1 = 1 - layer / n_layers` and channel i of C = width:
    decay[i] = -5 + 8 (i / (C - 1))^(0.7 + 1.3 r0)        (w = exp(decay) in [e^-5, e^3])
    bonus[i] = log(0.3) + 0.5 ((i + 1) mod 3 - 1)
    mix_k[i] = (i / C)^r1,  mix_v[i] = (i / C)^r1 + 0.3 r0,  mix_r[i] = (i / C)^(r1 / 2)
  and orthogonal (gain 1) r, k, v, out projections. RWKV-4 zero-initialises key, receptance and
  output; we do not: with k = 0 the step-0 routing would equal its positional prior and with a zero
  output the mixer's routed output and the gradients into r, k, v would vanish at step 0, while
  collapse is measured from step 0.
  """

  n_heads: int = 1
  layer: int = 0
  n_layers: int = 1
  content: bool = True
  gate: bool = True
  token_shift: bool = True
  bonus: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, brake, *, with_routing: bool = False):
    d = x_BxTxD.shape[-1]
    inits = rwkv_init(d, self.layer, self.n_layers)
    previous = jnp.pad(x_BxTxD, ((0, 0), (1, 0), (0, 0)))[:, :-1]

    def project(name):
      x = x_BxTxD
      if self.token_shift:
        mix = self.param(f"mix_{name}", lambda _: inits[f"mix_{name}"])
        x = x * mix + previous * (1.0 - mix)
      return nn.Dense(d, use_bias=False, kernel_init=nn.initializers.orthogonal(), name=name)(x)

    r = project("r") if self.gate else None
    k, v = project("k"), project("v")
    w = jnp.exp(self.param("decay", lambda _: inits["decay"]))
    u = self.param("bonus", lambda _: inits["bonus"]) if self.bonus else w
    route = functools.partial(routers.rwkv_mixer, r, k, v, w, u, brake=brake,
                              n_heads=self.n_heads, gate=self.gate)
    y, routing = route(content=self.content)
    y = nn.Dense(d, use_bias=False, kernel_init=nn.initializers.orthogonal(), name="out")(y)
    if not with_routing:
      return y, None, None
    return y, routing, routing if not self.content else route(content=False)[1]


def rwkv_init(width: int, layer: int, n_layers: int) -> dict:
  """RWKV-4's per-channel `decay`, `bonus`, `mix_k`, `mix_v`, `mix_r` (`[width]` float32 each);
  formulas in `RWKVMixer`'s docstring."""
  if not 0 <= layer < n_layers:
    raise ValueError(f"layer must be in [0, n_layers={n_layers}), got {layer}")
  ratio_0_to_1 = layer / (n_layers - 1) if n_layers > 1 else 0.0
  ratio_1_to_almost0 = 1.0 - layer / n_layers
  i = jnp.arange(width, dtype=jnp.float32)
  spread = i / max(width - 1, 1)
  fraction = i / width
  return dict(
      decay=-5.0 + 8.0 * spread ** (0.7 + 1.3 * ratio_0_to_1),
      bonus=jnp.log(0.3) + 0.5 * ((i + 1) % 3 - 1),
      mix_k=fraction ** ratio_1_to_almost0,
      mix_v=fraction ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1,
      mix_r=fraction ** (0.5 * ratio_1_to_almost0))


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


def make_mixer(kind: str, model_config, *, layer: int = 0, n_layers: int = 1) -> nn.Module:
  """The token mixer named `kind` ("attention", "ssm", "rwkv") configured from `model_config`;
  `layer` of `n_layers` sets RWKV's depth-dependent initialisation."""
  if kind == "attention":
    return AttentionMixer(n_heads=model_config.n_heads, score=model_config.score,
                          rope=model_config.positions == "rope", content=model_config.content,
                          normalise=model_config.normalise,
                          brake_slopes=model_config.brake_slopes)
  if kind == "ssm":
    return SSMMixer(state_size=model_config.state_size, expand=model_config.expand,
                    selective=model_config.selective, backend=model_config.ssm_backend)
  if kind == "rwkv":
    cfg = model_config
    return RWKVMixer(n_heads=cfg.n_heads, layer=layer, n_layers=n_layers, content=cfg.content,
                     gate=cfg.gate, token_shift=cfg.token_shift, bonus=cfg.bonus)
  raise ValueError(f"unknown mixer {kind!r}; expected attention, ssm or rwkv")

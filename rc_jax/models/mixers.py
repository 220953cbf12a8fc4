"""Flax token mixers: each owns its parameters and calls one pure router with a traced brake.

Every mixer maps `x [B, T, D] -> (y [B, T, D], routing, prior)`: with `with_routing=True` the
`Routing` of its router and the content-free prior (the same router with `content=False` on the same
inputs and brake), else `(y, None, None)` (under jit the unused O(T^2) kernels are dropped anyway).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
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
    return _causal_conv(u_BxTxC, kernel_WxC, bias_C)


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


# Recomputed in the backward pass from their inputs (elementwise work) instead of keeping the
# GELU's tanh intermediates (`[B, T, 4D]`) and the conv's W shifted copies (`[B, T, C]`) per layer:
# the `paper` presets' temporaries per run on CPU fall by 0.06 GiB (SSM, 1.22 -> 1.15 GiB,
# attention, RWKV, depth), at no measurable cost in step time.
@jax.checkpoint
def _gelu(x):
  return nn.gelu(x)


@jax.checkpoint
def _causal_conv(u_BxTxC, kernel_WxC, bias_C):
  """`v_t[c] = bias[c] + sum_k kernel[k, c] u_{t-W+1+k}[c]`, zeros before t = 0."""
  width, t = kernel_WxC.shape[0], u_BxTxC.shape[-2]
  padded = jnp.pad(u_BxTxC, ((0, 0), (width - 1, 0), (0, 0)))
  return bias_C + sum(kernel_WxC[k] * padded[:, k:k + t] for k in range(width))


class MLP(nn.Module):
  ratio: int = 4

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    return nn.Dense(d, name="down")(_gelu(nn.Dense(self.ratio * d, name="up")(x)))


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
                    selective=model_config.selective, backend=model_config.ssm_backend,
                    n_heads=model_config.n_heads, conv_width=model_config.conv_width,
                    dt_rank=model_config.dt_rank, gate=model_config.gate,
                    content=model_config.content)
  if kind == "rwkv":
    cfg = model_config
    return RWKVMixer(n_heads=cfg.n_heads, layer=layer, n_layers=n_layers, content=cfg.content,
                     gate=cfg.gate, token_shift=cfg.token_shift, bonus=cfg.bonus)
  raise ValueError(f"unknown mixer {kind!r}; expected attention, ssm or rwkv")

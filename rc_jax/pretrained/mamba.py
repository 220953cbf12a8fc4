"""Mamba (`model_type` "mamba", e.g. state-spaces/mamba-130m-hf) as a pure forward with routing.

Pre-norm residual stack of Mamba mixers (Hugging Face's `MambaMixer`, its `slow_forward` math):

    x      = rms_norm(h) * real               (padding tokens zeroed, as Hugging Face does)
    u, z   = in_proj(x)                       C = intermediate_size = expand * D channels each
    u      = act(causal_conv(u)) * real       depthwise, `conv_kernel` taps + bias, zeros before t=0
    Delta  = softplus(dt_proj(x_proj_dt(u)))  low rank `time_step_rank`
    B, C   = x_proj_B(u), x_proj_C(u)         [B, T, N] each (N = state_size)
    y      = selective_scan(u; Delta, A = -exp(A_log), B, C) + D * u
    h     += out_proj(y * silu(z))
    hidden_states[-1] = rms_norm_f(h_L)

The SSM is `rc_jax.routers.selective_ssm` itself (x_proj's rows split into its `delta_down`,
`b_proj`, `c_proj`; dt_proj into `delta_up`, `delta_bias`), so a layer's `Routing` has exactly the
semantics of the trained SSM router (no brake): the implicit hidden-attention kernel of Ali et al.
2024,

    K[t, s, c] = C_t . (prod_{r=s+1..t} exp(Delta_r[c] A[c])) . Delta_s[c] B_s       (s <= t)

with the C channels grouped into `num_heads` contiguous heads (default: heads of
`gcd(C, HEAD_CHANNELS)` channels, 64 for every released checkpoint: 24 heads for mamba-130m,
80 for mamba-2.8b):

    weights   [B, H, T, T]  M_h[t, s] / sum_s' M_h[t, s'],  M_h[t, s] = sum_{c in h} |K[t, s, c]|,
                            over the real sources s <= t of real target t (0 elsewhere)
    row_mass  [B, H, T]     sum_s M_h[t, s] over those sources: the mass target t reads
    key_norms [B, H, T]     ||Delta_s[c in h]||_2 ||B_s||_2 (what source s writes per unit input)
    mask      [B, 1, T, T]  causal, real target and real source

M is built by `selective_ssm`'s scan over targets holding one `[B, T, C, N]` state; the
`[T, T, C, N]` kernel is never formed. Its cost is O(T^2 C N) per layer, memory-bound: mamba-130m
at B = 4, T = 128 takes about a minute on 2 CPU cores (~0.03 s per layer of it without the
routing). The layer's positional prior (`ForwardOutput.priors`) is the same SSM with Delta, B
and C replaced by their means over each sequence's real tokens (A kept): a Toeplitz kernel.
Regroup heads with `dataclasses.replace(model, config=dataclasses.replace(model.config,
num_heads=H))` (H must divide C).

Padding: Hugging Face zeroes padding tokens' mixer inputs (before in_proj and after the conv), so a
padding source writes nothing into the state; the forward does the same. Positions have no limit
(a recurrence): `max_positions` is nominal.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from rc_jax import routers
from rc_jax.pretrained import layers
from rc_jax.pretrained.loading import ArchitectureConfig, TensorSpec, config_value
from rc_jax.pretrained.loading import common_fields, per_layer_specs
from rc_jax.routers.routing import Routing, row_normalise

HEAD_CHANNELS = 64
NO_POSITION_LIMIT = 2**31 - 1
# Mamba's dt initialisation (MambaConfig defaults), for the random-init baseline
_DT_MIN, _DT_MAX, _DT_FLOOR = 1e-3, 1e-1, 1e-4


def default_num_heads(channels: int) -> int:
  """Heads of `gcd(channels, HEAD_CHANNELS)` contiguous channels (`channels / 64` when 64 divides
  the channel count, as for every released Mamba and RWKV-4 checkpoint)."""
  return channels // math.gcd(channels, HEAD_CHANNELS)


@dataclasses.dataclass(frozen=True)
class Config(ArchitectureConfig):
  """The fields of a Mamba `config.json` the forward needs (hashable: a static jit argument).

  `intermediate_size` is the SSM's channel count C; `num_heads` groups them (module docstring);
  `activation` is the conv's activation (`hidden_act`); the gate is always silu.
  """

  state_size: int
  conv_kernel: int
  time_step_rank: int
  use_bias: bool
  use_conv_bias: bool
  residual_in_fp32: bool
  tie_word_embeddings: bool

  @classmethod
  def from_hf(cls, hf: dict[str, Any], where: str) -> "Config":
    hidden = int(config_value(hf, ("hidden_size", "d_model"), where))
    expand = config_value(hf, ("expand",), where, 2)
    channels = int(config_value(hf, ("intermediate_size",), where, int(expand * hidden)))
    rank = config_value(hf, ("time_step_rank",), where, "auto")
    rank = math.ceil(hidden / 16) if rank == "auto" else int(rank)
    fields = common_fields(hf, where, max_positions=NO_POSITION_LIMIT, intermediate_size=channels,
                           activation="silu", layer_norm_eps=1e-5, initializer_range=0.1)
    return cls(
        **dict(fields, max_positions=NO_POSITION_LIMIT),   # a recurrence: no position table
        hidden_size=hidden, num_heads=default_num_heads(channels),
        state_size=int(config_value(hf, ("state_size",), where, 16)),
        conv_kernel=int(config_value(hf, ("conv_kernel",), where, 4)),
        time_step_rank=rank,
        use_bias=bool(config_value(hf, ("use_bias",), where, False)),
        use_conv_bias=bool(config_value(hf, ("use_conv_bias",), where, True)),
        residual_in_fp32=bool(config_value(hf, ("residual_in_fp32",), where, True)),
        tie_word_embeddings=bool(config_value(hf, ("tie_word_embeddings",), where, True)),
    )


def _s4d_real_a_log(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Mamba's S4D-real initialisation: `A_log[c, n] = log(n + 1)` (so A = -(1..N))."""
  del key
  return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[-1] + 1, dtype=jnp.float32)), shape)


def _dt_bias(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Mamba's dt_proj bias: `softplus^{-1}(dt)`, dt log-uniform in [1e-3, 1e-1], floored at 1e-4."""
  log_dt = jax.random.uniform(key, shape, minval=math.log(_DT_MIN), maxval=math.log(_DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), _DT_FLOOR)
  return dt + jnp.log(-jnp.expm1(-dt))


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The Mamba tensors and their stored shapes (nn.Linear: `[out, in]`, transposed on load).

  Random init (the null baseline): Mamba's own A_log (S4D real), D = 1 and dt bias; the rest as
  `loading.init_params` documents.
  """
  d, c, n, r = cfg.hidden_size, cfg.intermediate_size, cfg.state_size, cfg.time_step_rank

  layer = per_layer_specs("layers.{i}.")

  specs = [
      # `embedding.weight` in mamba_ssm's naming, which Hugging Face's MambaModel also accepts
      TensorSpec("embeddings", "embeddings.weight", (cfg.vocab_size, d),
                 aliases=("embedding.weight",)),
      layer("norm_scale", "norm.weight", (d,), "ones"),
      layer("in_kernel", "mixer.in_proj.weight", (2 * c, d), transpose=True),
      layer("conv_kernel", "mixer.conv1d.weight", (c, 1, cfg.conv_kernel)),
      layer("x_kernel", "mixer.x_proj.weight", (r + 2 * n, c), transpose=True),
      layer("dt_kernel", "mixer.dt_proj.weight", (c, r), transpose=True),
      layer("dt_bias", "mixer.dt_proj.bias", (c,), _dt_bias),
      layer("a_log", "mixer.A_log", (c, n), _s4d_real_a_log),
      layer("d", "mixer.D", (c,), "ones"),
      layer("out_kernel", "mixer.out_proj.weight", (d, c), transpose=True),
      TensorSpec("norm_f_scale", "norm_f.weight", (d,), "ones"),
  ]
  if cfg.use_bias:
    specs += [layer("in_bias", "mixer.in_proj.bias", (2 * c,), "zeros"),
              layer("out_bias", "mixer.out_proj.bias", (d,), "zeros")]
  if cfg.use_conv_bias:
    specs.append(layer("conv_bias", "mixer.conv1d.bias", (c,), "zeros"))
  if not cfg.tie_word_embeddings:
    specs.append(TensorSpec("lm_head", "lm_head.weight", (cfg.vocab_size, d), optional=True,
                            prefixed=False))
  return specs


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """MambaRMSNorm: `scale * (x / sqrt(mean(x^2) + eps))`, computed in float32, cast to x.dtype."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return (scale * y.astype(x.dtype)).astype(x.dtype)


def _causal_conv(u: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
  """Depthwise causal conv over time (PyTorch Conv1d(groups=C, padding=W-1) cut to T):
  `v_t[c] = bias[c] + sum_k kernel[c, 0, k] u_{t-W+1+k}[c]`, zeros before t = 0."""
  width, t = kernel.shape[-1], u.shape[-2]
  padded = jnp.pad(u, ((0, 0), (width - 1, 0), (0, 0)))
  out = sum(kernel[:, 0, k] * padded[:, k:k + t] for k in range(width))
  return out if bias is None else out + bias


def _ssm_params(p: dict[str, jax.Array], cfg: Config) -> dict[str, jax.Array]:
  """The layer's SSM parameters in `routers.selective_ssm`'s names (float32)."""
  r, n = cfg.time_step_rank, cfg.state_size
  x_kernel = p["x_kernel"].astype(jnp.float32)
  return {"a_log": p["a_log"], "d": p["d"], "delta_bias": p["dt_bias"],
          "delta_down": x_kernel[:, :r], "delta_up": p["dt_kernel"],
          "b_proj": x_kernel[:, r:r + n], "c_proj": x_kernel[:, r + n:]}


def _prior(u: jax.Array, ssm: dict[str, jax.Array], token_mask: jax.Array,
           n_heads: int) -> Routing:
  """The content-free SSM routing: Delta, B, C replaced by their means over each sequence's real
  tokens. Computed by `selective_ssm(selective=False, content=False)` per sequence, whose frozen
  Delta, B, C are set to those means (`delta_bias = softplus^{-1}(mean Delta)`)."""
  delta, b, c = _discretise(u, ssm)
  weight = token_mask.astype(jnp.float32)
  weight = weight / jnp.maximum(jnp.sum(weight, axis=-1, keepdims=True), 1.0)
  mean = lambda z: jnp.einsum("bt,btx->bx", weight, z)
  mean_delta = jnp.maximum(mean(delta), 1e-30)
  frozen = {"delta_bias": mean_delta + jnp.log(-jnp.expm1(-mean_delta)),
            "b_static": mean(b), "c_static": mean(c)}
  shared = {"a_log": ssm["a_log"].astype(jnp.float32), "d": ssm["d"].astype(jnp.float32)}

  def one(u_seq, frozen_seq):
    return routers.selective_ssm(u_seq, {**shared, **frozen_seq}, selective=False,
                                 content=False, n_heads=n_heads)[1]

  return jax.vmap(one)(u.astype(jnp.float32), frozen)


def _discretise(u: jax.Array, ssm: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
  """`(Delta [B, T, C], B [B, T, N], C [B, T, N])` in float32, as `selective_ssm` forms them."""
  u32 = u.astype(jnp.float32)
  p = {name: value.astype(jnp.float32) for name, value in ssm.items()}
  delta = jax.nn.softplus((u32 @ p["delta_down"]) @ p["delta_up"] + p["delta_bias"])
  return delta, u32 @ p["b_proj"], u32 @ p["c_proj"]


def _masked(routing: Routing, full_mask: jax.Array) -> Routing:
  """An SSM routing restricted to real targets and sources: renormalised weights, the kept
  `row_mass`, key norms broadcast per target; mask `full_mask [B, 1, T, T]`."""
  magnitudes = jnp.where(full_mask, routing.weights * routing.row_mass[..., None], 0.0)
  return Routing(weights=row_normalise(magnitudes, full_mask), mask=full_mask,
                 key_norms=jnp.broadcast_to(routing.key_norms, routing.row_mass.shape),
                 row_mass=jnp.sum(magnitudes, axis=-1))


def embed(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, jax.Array]:
  """`(carry, embeddings [B, T, D])`: the carry is the residual stream, float32 with
  `residual_in_fp32`."""
  del token_mask
  embeddings = params["embeddings"][token_ids]
  return (embeddings.astype(jnp.float32) if cfg.residual_in_fp32 else embeddings), embeddings


def block(h: jax.Array, p: dict[str, jax.Array], index: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, layers.LayerOutput]:
  """One Mamba layer of the residual stream `h [B, T, D]` with its params `p` (the same for every
  `index`): norm, in-projection, causal conv, selective scan, gate, out-projection."""
  del index
  dtype = p["in_kernel"].dtype
  real = token_mask.astype(dtype)[..., None]
  full_mask = layers.routing_mask(token_mask, causal=True)
  act = layers.ACTIVATIONS[cfg.activation]
  x = rms_norm(h.astype(dtype), p["norm_scale"], cfg.layer_norm_eps) * real
  u, z = jnp.split(layers.dense(x, p["in_kernel"], p.get("in_bias")), 2, axis=-1)
  u = act(_causal_conv(u, p["conv_kernel"], p.get("conv_bias"))) * real
  ssm = _ssm_params(p, cfg)
  y, routing = routers.selective_ssm(u, ssm, n_heads=cfg.num_heads)
  y = y.astype(jnp.float32) * jax.nn.silu(z.astype(jnp.float32))
  h = h + layers.dense(y.astype(dtype), p["out_kernel"], p.get("out_bias"))
  prior = _prior(u, ssm, token_mask, cfg.num_heads)
  return h, layers.LayerOutput(hidden=h.astype(dtype), routing=_masked(routing, full_mask),
                               prior=_masked(prior, full_mask))


def final(params: dict[str, Any], h: jax.Array, cfg: Config) -> jax.Array:
  """`norm_f` on the (float32 with `residual_in_fp32`) residual stream, as Hugging Face's."""
  return rms_norm(h, params["norm_f_scale"], cfg.layer_norm_eps).astype(
      params["embeddings"].dtype)


def logits(params: dict[str, Any], final_hidden: jax.Array, cfg: Config) -> jax.Array:
  """LM logits `[..., V]` (float32) of final-normed hidden states: the tied embeddings, or
  `lm_head` when `tie_word_embeddings` is False."""
  return layers.lm_logits(params, final_hidden, "lm_head", tied=cfg.tie_word_embeddings)


# what `rc_jax.pretrained.load` reads to recognise and find this architecture
MODEL_TYPE = "mamba"
PREFIXES = ("backbone.", "")
PROBE_TENSOR = "norm_f.weight"  # the embedding's name varies (below)

"""GPT-2 (`model_type` "gpt2") as a pure forward over a params pytree.

Pre-LN decoder with learned absolute positions:

    h_0 = wte[x] + wpe[pos]
    h  += c_proj(attn(ln_1(h)))           causal softmax(q.k * scale), scale = K^-0.5 [/ (l + 1)]
    h  += mlp_proj(act(mlp_fc(ln_2(h))))
    hidden_states[-1] = ln_f(h_L)

Checkpoints store names with or without the `transformer.` prefix (GPT2LMHeadModel / GPT2Model);
Conv1D weights are already `[in, out]`. The LM head is tied to `wte` and not needed here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rc_jax.pretrained import layers
from rc_jax.routers.attention import merge_heads, split_heads
from rc_jax.pretrained.loading import ArchitectureConfig, TensorSpec, config_value
from rc_jax.pretrained.loading import common_fields, dense_specs, norm_specs, per_layer_specs
from rc_jax.pretrained.loading import width_and_heads


@dataclasses.dataclass(frozen=True)
class Config(ArchitectureConfig):
  """The fields of a GPT-2 `config.json` the forward needs (hashable: a static jit argument)."""

  scale_attn_weights: bool
  scale_attn_by_inverse_layer_idx: bool

  @classmethod
  def from_hf(cls, hf: dict[str, Any], where: str) -> "Config":
    hidden, heads = width_and_heads(hf, where)
    return cls(
        **common_fields(hf, where, intermediate_size=4 * hidden, activation="gelu_new",
                        layer_norm_eps=1e-5, initializer_range=0.02),
        hidden_size=hidden, num_heads=heads,
        scale_attn_weights=bool(config_value(hf, ("scale_attn_weights",), where, True)),
        scale_attn_by_inverse_layer_idx=bool(
            config_value(hf, ("scale_attn_by_inverse_layer_idx",), where, False)),
    )


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The GPT-2 tensors and their stored shapes (Conv1D: `[in, out]`)."""
  d, f = cfg.hidden_size, cfg.intermediate_size

  layer = per_layer_specs("h.{i}.")

  return [TensorSpec("wte", "wte.weight", (cfg.vocab_size, d)),
          TensorSpec("wpe", "wpe.weight", (cfg.max_positions, d)),
          *norm_specs(layer, "ln_1", "ln_1", d),
          *dense_specs(layer, "qkv", "attn.c_attn", (d, 3 * d)),
          *dense_specs(layer, "out", "attn.c_proj", (d, d)),
          *norm_specs(layer, "ln_2", "ln_2", d),
          *dense_specs(layer, "fc", "mlp.c_fc", (d, f)),
          *dense_specs(layer, "proj", "mlp.c_proj", (f, d)),
          *norm_specs(TensorSpec, "ln_f", "ln_f", d)]


def embed(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, jax.Array]:
  """`(carry, embeddings)`: both `wte[x] + wpe[pos]`, `[B, T, D]`; positions `0..T-1`."""
  del token_mask, cfg
  h = params["wte"][token_ids] + params["wpe"][:token_ids.shape[1]][None]
  return h, h


def block(h: jax.Array, p: dict[str, jax.Array], index: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, layers.LayerOutput]:
  """Layer `index` (int32 scalar) of `h [B, T, D]` with its params `p`."""
  head_dim = cfg.hidden_size // cfg.num_heads
  act = layers.ACTIVATIONS[cfg.activation]
  scale = head_dim**-0.5 if cfg.scale_attn_weights else 1.0
  if cfg.scale_attn_by_inverse_layer_idx:
    scale = scale / (index + 1).astype(jnp.float32)
  a = layers.layer_norm(h, p["ln_1_scale"], p["ln_1_bias"], cfg.layer_norm_eps)
  q, k, v = jnp.split(layers.dense(a, p["qkv_kernel"], p["qkv_bias"]), 3, axis=-1)
  q, k, v = (split_heads(z, cfg.num_heads) for z in (q, k, v))
  o, routing = layers.attention(q, k, v, token_mask, causal=True, scale=scale)
  h = h + layers.dense(merge_heads(o), p["out_kernel"], p["out_bias"])
  m = layers.layer_norm(h, p["ln_2_scale"], p["ln_2_bias"], cfg.layer_norm_eps)
  h = h + layers.dense(act(layers.dense(m, p["fc_kernel"], p["fc_bias"])), p["proj_kernel"],
                       p["proj_bias"])
  return h, layers.LayerOutput(hidden=h, routing=routing)


def final(params: dict[str, Any], h: jax.Array, cfg: Config) -> jax.Array:
  """`ln_f` of the last layer's output."""
  return layers.layer_norm(h, params["ln_f_scale"], params["ln_f_bias"], cfg.layer_norm_eps)


# what `rc_jax.pretrained.load` reads to recognise and find this architecture
MODEL_TYPE = "gpt2"
PREFIXES = ("", "transformer.")
PROBE_TENSOR = "wte.weight"

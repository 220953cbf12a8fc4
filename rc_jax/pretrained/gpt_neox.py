"""GPT-NeoX / Pythia (`model_type` "gpt_neox") as a pure forward over a params pytree.

Pre-LN decoder with partial rotary positions and (by default) a parallel residual:

    a   = attn(input_ln(h))     q, k rotated on their first `rotary_dim = int(K * rotary_pct)`
                                features (rotate-half convention), causal softmax(q.k / sqrt(K))
    h  += a + mlp(post_attention_ln(h))            use_parallel_residual (Pythia)
    h   = (h + a) + mlp(post_attention_ln(h + a))  otherwise
    hidden_states[-1] = final_layer_norm(h_L)

The fused `query_key_value` projection is laid out per head as `[H, 3, K]`. Both config spellings
are read: `rotary_pct` / `rotary_emb_base` (Pythia) and `rope_parameters` (transformers 5).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from rc_jax.pretrained import layers
from rc_jax.routers.attention import merge_heads
from rc_jax.pretrained.loading import ArchitectureConfig, TensorSpec, config_value
from rc_jax.pretrained.loading import common_fields, dense_specs, norm_specs, per_layer_specs
from rc_jax.pretrained.loading import width_and_heads
from rc_jax.routers.scores import apply_rope


@dataclasses.dataclass(frozen=True)
class Config(ArchitectureConfig):
  """The fields of a GPT-NeoX `config.json` the forward needs (hashable: a static jit argument)."""

  rotary_dim: int
  rotary_base: float
  use_parallel_residual: bool
  attention_bias: bool

  @classmethod
  def from_hf(cls, hf: dict[str, Any], where: str) -> "Config":
    hidden, heads = width_and_heads(hf, where)
    rope = dict(config_value(hf, ("rope_parameters", "rope_scaling"), where, {}))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ValueError(f"{where}: rope_type {rope_type!r} is not supported (only 'default')")
    pct = float(rope.get("partial_rotary_factor", config_value(hf, ("rotary_pct",), where, 0.25)))
    base = float(rope.get("rope_theta", config_value(hf, ("rotary_emb_base", "rope_theta"), where,
                                                     10000.0)))
    rotary_dim = int(hidden // heads * pct)
    if rotary_dim % 2:
      raise ValueError(f"{where}: rotary dimension {rotary_dim} (head size x rotary_pct) must be "
                       "even")
    return cls(
        **common_fields(hf, where, max_positions=2048, activation="gelu", layer_norm_eps=1e-5,
                        initializer_range=0.02),
        hidden_size=hidden, num_heads=heads,
        rotary_dim=rotary_dim,
        rotary_base=base,
        use_parallel_residual=bool(config_value(hf, ("use_parallel_residual",), where, True)),
        attention_bias=bool(config_value(hf, ("attention_bias",), where, True)),
    )


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The GPT-NeoX tensors and their stored shapes (nn.Linear: `[out, in]`, transposed on load)."""
  d, f = cfg.hidden_size, cfg.intermediate_size

  layer = per_layer_specs("layers.{i}.")

  attention = dict(transpose=True, bias=cfg.attention_bias)
  return [TensorSpec("embed_in", "embed_in.weight", (cfg.vocab_size, d)),
          *norm_specs(layer, "input_ln", "input_layernorm", d),
          *dense_specs(layer, "qkv", "attention.query_key_value", (3 * d, d), **attention),
          *dense_specs(layer, "out", "attention.dense", (d, d), **attention),
          *norm_specs(layer, "post_ln", "post_attention_layernorm", d),
          *dense_specs(layer, "fc", "mlp.dense_h_to_4h", (f, d), transpose=True),
          *dense_specs(layer, "proj", "mlp.dense_4h_to_h", (d, f), transpose=True),
          *norm_specs(TensorSpec, "final_ln", "final_layer_norm", d)]


def embed(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, jax.Array]:
  """`(carry, embeddings)`: both `embed_in[x]`, `[B, T, D]`."""
  del token_mask, cfg
  h = params["embed_in"][token_ids]
  return h, h


def block(h: jax.Array, p: dict[str, jax.Array], index: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, layers.LayerOutput]:
  """One layer of `h [B, T, D]` with its params `p` (the same for every `index`); positions
  `0..T-1`."""
  del index
  b, t = token_mask.shape
  head_dim = cfg.hidden_size // cfg.num_heads
  act = layers.ACTIVATIONS[cfg.activation]
  positions = jnp.arange(t)

  def rotate(x):
    if cfg.rotary_dim == 0:
      return x
    return apply_rope(x, positions, base=cfg.rotary_base, rotary_dim=cfg.rotary_dim)

  def mlp(x):
    return layers.dense(act(layers.dense(x, p["fc_kernel"], p["fc_bias"])), p["proj_kernel"],
                        p["proj_bias"])

  a = layers.layer_norm(h, p["input_ln_scale"], p["input_ln_bias"], cfg.layer_norm_eps)
  qkv = layers.dense(a, p["qkv_kernel"], p.get("qkv_bias"))
  qkv = qkv.reshape(b, t, cfg.num_heads, 3, head_dim).transpose(3, 0, 2, 1, 4)
  q, k, v = rotate(qkv[0]), rotate(qkv[1]), qkv[2]
  o, routing = layers.attention(q, k, v, token_mask, causal=True, scale=head_dim**-0.5)
  attn_out = layers.dense(merge_heads(o), p["out_kernel"], p.get("out_bias"))
  if cfg.use_parallel_residual:
    post = layers.layer_norm(h, p["post_ln_scale"], p["post_ln_bias"], cfg.layer_norm_eps)
    h = h + attn_out + mlp(post)
  else:
    h = h + attn_out
    post = layers.layer_norm(h, p["post_ln_scale"], p["post_ln_bias"], cfg.layer_norm_eps)
    h = h + mlp(post)
  return h, layers.LayerOutput(hidden=h, routing=routing)


def final(params: dict[str, Any], h: jax.Array, cfg: Config) -> jax.Array:
  """`final_layer_norm` of the last layer's output."""
  return layers.layer_norm(h, params["final_ln_scale"], params["final_ln_bias"],
                           cfg.layer_norm_eps)


# what `rc_jax.pretrained.load` reads to recognise and find this architecture
MODEL_TYPE = "gpt_neox"
PREFIXES = ("gpt_neox.", "")
PROBE_TENSOR = "embed_in.weight"

"""BERT (`model_type` "bert", e.g. all-MiniLM-L6-v2) as a pure forward over a params pytree.

Post-LN bidirectional encoder with learned absolute positions:

    h_0 = LN(word[x] + token_type[0] + position[pos])
    h   = LN(h + attn_out(attn(h)))        softmax(q.k / sqrt(K)) over the real (non-padding) tokens
    h   = LN(h + out(act(intermediate(h))))

`hidden_states` are `h_0 .. h_L` (no final norm). Checkpoints store names with or without the
`bert.` prefix (BertModel / BertFor* heads); pooler and task heads are not read. Only
`position_embedding_type = "absolute"` is supported; token types are all 0 (one segment).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from rc_jax.pretrained import layers
from rc_jax.routers.attention import merge_heads, split_heads
from rc_jax.pretrained.loading import (LAYERS, ArchitectureConfig, TensorSpec, config_value,
                                      width_and_heads)

MODEL_TYPE = "bert"
PREFIXES = ("", "bert.")
PROBE_TENSOR = "embeddings.word_embeddings.weight"


@dataclasses.dataclass(frozen=True)
class Config(ArchitectureConfig):
  """The fields of a BERT `config.json` the forward needs (hashable: a static jit argument)."""

  type_vocab_size: int

  @classmethod
  def from_hf(cls, hf: dict[str, Any], where: str) -> "Config":
    hidden, heads = width_and_heads(hf, where)
    position_type = config_value(hf, ("position_embedding_type",), where, "absolute")
    if position_type != "absolute":
      raise ValueError(f"{where}: position_embedding_type {position_type!r} is not supported "
                       "(only 'absolute')")
    return cls(
        vocab_size=int(config_value(hf, ("vocab_size",), where)),
        max_positions=int(config_value(hf, ("max_position_embeddings",), where, 512)),
        hidden_size=hidden,
        num_layers=int(config_value(hf, ("num_hidden_layers",), where)),
        num_heads=heads,
        intermediate_size=int(config_value(hf, ("intermediate_size",), where)),
        activation=layers.check_activation(config_value(hf, ("hidden_act",), where, "gelu"),
                                           where),
        layer_norm_eps=float(config_value(hf, ("layer_norm_eps",), where, 1e-12)),
        initializer_range=float(config_value(hf, ("initializer_range",), where, 0.02)),
        type_vocab_size=int(config_value(hf, ("type_vocab_size",), where, 2)),
    )


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The BERT encoder tensors and their stored shapes (nn.Linear: `[out, in]`, transposed)."""
  d, f = cfg.hidden_size, cfg.intermediate_size

  def layer(name, hf_suffix, shape, init="normal", transpose=False):
    return TensorSpec(name, f"encoder.layer.{{i}}.{hf_suffix}", shape, init, transpose,
                      per_layer=True)

  return [
      TensorSpec("word", "embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
      TensorSpec("position", "embeddings.position_embeddings.weight", (cfg.max_positions, d)),
      TensorSpec("token_type", "embeddings.token_type_embeddings.weight",
                 (cfg.type_vocab_size, d)),
      TensorSpec("embed_ln_scale", "embeddings.LayerNorm.weight", (d,), "ones"),
      TensorSpec("embed_ln_bias", "embeddings.LayerNorm.bias", (d,), "zeros"),
      layer("q_kernel", "attention.self.query.weight", (d, d), transpose=True),
      layer("q_bias", "attention.self.query.bias", (d,), "zeros"),
      layer("k_kernel", "attention.self.key.weight", (d, d), transpose=True),
      layer("k_bias", "attention.self.key.bias", (d,), "zeros"),
      layer("v_kernel", "attention.self.value.weight", (d, d), transpose=True),
      layer("v_bias", "attention.self.value.bias", (d,), "zeros"),
      layer("attn_out_kernel", "attention.output.dense.weight", (d, d), transpose=True),
      layer("attn_out_bias", "attention.output.dense.bias", (d,), "zeros"),
      layer("attn_ln_scale", "attention.output.LayerNorm.weight", (d,), "ones"),
      layer("attn_ln_bias", "attention.output.LayerNorm.bias", (d,), "zeros"),
      layer("fc_kernel", "intermediate.dense.weight", (f, d), transpose=True),
      layer("fc_bias", "intermediate.dense.bias", (f,), "zeros"),
      layer("proj_kernel", "output.dense.weight", (d, f), transpose=True),
      layer("proj_bias", "output.dense.bias", (d,), "zeros"),
      layer("out_ln_scale", "output.LayerNorm.weight", (d,), "ones"),
      layer("out_ln_bias", "output.LayerNorm.bias", (d,), "zeros"),
  ]


def forward(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
            cfg: Config) -> layers.ForwardOutput:
  """BERT forward. `token_ids`, `token_mask` (1 = real token): `[B, T]`; positions `0..T-1`."""
  t = token_ids.shape[1]
  eps = cfg.layer_norm_eps
  e = params["word"][token_ids] + params["token_type"][0] + params["position"][:t][None]
  h = layers.layer_norm(e, params["embed_ln_scale"], params["embed_ln_bias"], eps)
  head_dim = cfg.hidden_size // cfg.num_heads
  act = layers.ACTIVATIONS[cfg.activation]

  def block(h, p):
    q, k, v = (split_heads(layers.dense(h, p[f"{n}_kernel"], p[f"{n}_bias"]), cfg.num_heads)
               for n in "qkv")
    o, routing = layers.attention(q, k, v, token_mask, causal=False, scale=head_dim**-0.5)
    a = layers.dense(merge_heads(o), p["attn_out_kernel"], p["attn_out_bias"])
    h = layers.layer_norm(h + a, p["attn_ln_scale"], p["attn_ln_bias"], eps)
    m = layers.dense(act(layers.dense(h, p["fc_kernel"], p["fc_bias"])), p["proj_kernel"],
                     p["proj_bias"])
    h = layers.layer_norm(h + m, p["out_ln_scale"], p["out_ln_bias"], eps)
    return h, (h, routing.weights, routing.key_norms)

  h_last, (hidden, weights, key_norms) = jax.lax.scan(block, h, params[LAYERS])
  return layers.stack_outputs(h, hidden, h_last, weights,
                              layers.routing_mask(token_mask, causal=False), key_norms)

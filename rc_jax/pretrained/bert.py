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
from rc_jax.pretrained.loading import ArchitectureConfig, TensorSpec, config_value
from rc_jax.pretrained.loading import common_fields, dense_specs, norm_specs, per_layer_specs
from rc_jax.pretrained.loading import width_and_heads


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
        **common_fields(hf, where, max_positions=512, activation="gelu", layer_norm_eps=1e-12,
                        initializer_range=0.02),
        hidden_size=hidden, num_heads=heads,
        type_vocab_size=int(config_value(hf, ("type_vocab_size",), where, 2)),
    )


def tensor_specs(cfg: Config) -> list[TensorSpec]:
  """The BERT encoder tensors and their stored shapes (nn.Linear: `[out, in]`, transposed)."""
  d, f = cfg.hidden_size, cfg.intermediate_size

  layer = per_layer_specs("encoder.layer.{i}.")

  return [
      TensorSpec("word", "embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
      TensorSpec("position", "embeddings.position_embeddings.weight", (cfg.max_positions, d)),
      TensorSpec("token_type", "embeddings.token_type_embeddings.weight",
                 (cfg.type_vocab_size, d)),
      *norm_specs(TensorSpec, "embed_ln", "embeddings.LayerNorm", d),
      *[spec for name, hf in (("q", "query"), ("k", "key"), ("v", "value"))
        for spec in dense_specs(layer, name, f"attention.self.{hf}", (d, d), transpose=True)],
      *dense_specs(layer, "attn_out", "attention.output.dense", (d, d), transpose=True),
      *norm_specs(layer, "attn_ln", "attention.output.LayerNorm", d),
      *dense_specs(layer, "fc", "intermediate.dense", (f, d), transpose=True),
      *dense_specs(layer, "proj", "output.dense", (d, f), transpose=True),
      *norm_specs(layer, "out_ln", "output.LayerNorm", d),
  ]


def embed(params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, jax.Array]:
  """`(carry, embeddings)`: both `LN(word[x] + token_type[0] + position[pos])`, `[B, T, D]`."""
  del token_mask
  e = (params["word"][token_ids] + params["token_type"][0]
       + params["position"][:token_ids.shape[1]][None])
  h = layers.layer_norm(e, params["embed_ln_scale"], params["embed_ln_bias"], cfg.layer_norm_eps)
  return h, h


def block(h: jax.Array, p: dict[str, jax.Array], index: jax.Array, token_mask: jax.Array,
          cfg: Config) -> tuple[jax.Array, layers.LayerOutput]:
  """One encoder layer of `h [B, T, D]` with its params `p` (the same for every `index`)."""
  del index
  eps = cfg.layer_norm_eps
  head_dim = cfg.hidden_size // cfg.num_heads
  act = layers.ACTIVATIONS[cfg.activation]
  q, k, v = (split_heads(layers.dense(h, p[f"{n}_kernel"], p[f"{n}_bias"]), cfg.num_heads)
             for n in "qkv")
  o, routing = layers.attention(q, k, v, token_mask, causal=False, scale=head_dim**-0.5)
  a = layers.dense(merge_heads(o), p["attn_out_kernel"], p["attn_out_bias"])
  h = layers.layer_norm(h + a, p["attn_ln_scale"], p["attn_ln_bias"], eps)
  m = layers.dense(act(layers.dense(h, p["fc_kernel"], p["fc_bias"])), p["proj_kernel"],
                   p["proj_bias"])
  h = layers.layer_norm(h + m, p["out_ln_scale"], p["out_ln_bias"], eps)
  return h, layers.LayerOutput(hidden=h, routing=routing)


def final(params: dict[str, Any], h: jax.Array, cfg: Config) -> jax.Array:
  """BERT has no final norm: the last layer's output."""
  del params, cfg
  return h


# what `rc_jax.pretrained.load` reads to recognise and find this architecture
MODEL_TYPE = "bert"
PREFIXES = ("", "bert.")
PROBE_TENSOR = "embeddings.word_embeddings.weight"

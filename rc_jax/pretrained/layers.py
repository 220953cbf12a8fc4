"""Building blocks shared by the pretrained-architecture forwards (pure functions on arrays).

Shapes: `B` batch, `T` tokens, `H` heads, `D` model width, `K` head width. Every attention layer
returns a `Routing` record over the tokens of each sequence:

  weights   [B, H, T, T]  float32 softmax weights exactly as Hugging Face's eager attention computes
                          them (see `attention` for padded rows).
  mask      [B, 1, T, T]  bool: target i may use source j (causal for decoders) and both are real
                          (non-padding) tokens; rows of padding targets are all False.
  key_norms [B, H, T]     L2 norm of each head's key, as used in the score (after rotary, if any).
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp

from rc_jax.routers.routing import Routing, masked_softmax


@flax.struct.dataclass
class ForwardOutput:
  """What a pretrained forward returns.

  Attributes:
    routings: one `Routing` per layer (see the module docstring for shapes).
    hidden_states: `n_layers + 1` arrays `[B, T, D]` in Hugging Face's order: the embeddings, then
      each layer's output, where the last entry has the final layer norm applied (GPT-2, GPT-NeoX;
      BERT has no final norm).
  """

  routings: tuple[Routing, ...]
  hidden_states: tuple[jax.Array, ...]


def _gelu_tanh(x: jax.Array) -> jax.Array:
  return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def check_activation(name: str, where: str) -> str:
  """Returns `name` if it is a supported activation, else raises ValueError naming `where`."""
  if name not in ACTIVATIONS:
    raise ValueError(f"{where}: activation {name!r} is not supported "
                     f"(supported: {', '.join(sorted(ACTIVATIONS))})")
  return name


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """LayerNorm over the last axis, computed in float32 and cast back to `x.dtype`."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """`x @ kernel + bias` with `kernel [in, out]`."""
  y = x @ kernel
  return y if bias is None else y + bias


def split_heads(x: jax.Array, n_heads: int) -> jax.Array:
  """`[B, T, H*K] -> [B, H, T, K]`."""
  b, t, d = x.shape
  return x.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
  """`[B, H, T, K] -> [B, T, H*K]`."""
  b, h, t, k = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, t, h * k)


def attention_masks(token_mask: jax.Array, causal: bool) -> tuple[jax.Array, jax.Array]:
  """Softmax admissibility and the `Routing` mask from a `[B, T]` padding mask (1 = real token).

  Returns:
    allowed `[B, 1, T, T]`: sources each target's softmax runs over (real sources, causal if asked),
    as Hugging Face masks them; routing_mask `[B, 1, T, T]`: `allowed` restricted to real targets.
  """
  real = token_mask.astype(bool)
  t = real.shape[-1]
  allowed = jnp.broadcast_to(real[:, None, None, :], (real.shape[0], 1, t, t))
  if causal:
    allowed = allowed & jnp.tril(jnp.ones((t, t), bool))
  return allowed, allowed & real[:, None, :, None]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array,
              routing_mask: jax.Array, scale: float) -> tuple[jax.Array, Routing]:
  """Softmax attention `softmax(scale * q.k) v` with its `Routing`.

  Args:
    q, k, v: `[B, H, T, K]`.
    allowed: bool `[B, 1, T, T]`, the sources each target's softmax runs over.
    routing_mask: bool `[B, 1, T, T]`, stored as the routing mask (padding targets excluded).
    scale: multiplier of the dot products.

  Returns:
    `out [B, H, T, K]` and the `Routing`. Rows of padding targets hold what Hugging Face computes:
    the padding token attending to the real sources it may see, or, for a target with no admissible
    source (left padding in a causal model), uniform weights `1/T` over all sources; their mask rows
    are all False so metrics ignore them. Padding sources get weight 0 from every target.
  """
  scores = jnp.einsum("bhtk,bhsk->bhts", q, k).astype(jnp.float32) * scale
  weights = masked_softmax(scores, allowed)
  has_source = jnp.any(allowed, axis=-1, keepdims=True)
  weights = jnp.where(has_source, weights, 1.0 / weights.shape[-1])
  out = jnp.einsum("bhts,bhsk->bhtk", weights.astype(v.dtype), v)
  key_norms = jnp.linalg.norm(k.astype(jnp.float32), axis=-1)
  return out, Routing(weights=weights, mask=routing_mask, key_norms=key_norms)


def stack_outputs(embeddings: jax.Array, layer_hidden: jax.Array, last_hidden: jax.Array,
                  weights: jax.Array, routing_mask: jax.Array,
                  key_norms: jax.Array) -> ForwardOutput:
  """Assembles a `ForwardOutput` from per-layer arrays stacked on a leading `[L]` axis.

  `layer_hidden [L, B, T, D]` are the raw layer outputs; the last one is replaced by `last_hidden`
  (the final-normed output, Hugging Face's convention).
  """
  n_layers = weights.shape[0]
  hidden = (embeddings,) + tuple(layer_hidden[i] for i in range(n_layers - 1)) + (last_hidden,)
  routings = tuple(
      Routing(weights=weights[i], mask=routing_mask, key_norms=key_norms[i])
      for i in range(n_layers))
  return ForwardOutput(routings=routings, hidden_states=hidden)

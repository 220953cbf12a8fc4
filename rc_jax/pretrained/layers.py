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

from rc_jax import routers
from rc_jax.routers.routing import Routing


@flax.struct.dataclass
class ForwardOutput:
  """What a pretrained forward returns.

  Attributes:
    routings: one `Routing` per layer (see the module docstring for shapes).
    hidden_states: `n_layers + 1` arrays `[B, T, D]` in Hugging Face's order: the embeddings, then
      each layer's output, where the last entry has the final layer norm applied (GPT-2, GPT-NeoX,
      Mamba, RWKV; BERT has no final norm). (Hugging Face's Mamba and RWKV tuples leave out the
      embeddings and hold the last layer's output twice, raw and final-normed; here entry 0 is the
      embeddings and the raw last output is dropped, so `hidden_states[l + 1]` is layer l's output
      for every architecture.)
    priors: one positional-prior `Routing` per layer, shaped like `routings`, for routers whose
      prior is not uniform (Mamba: the SSM with Delta, B, C replaced by their sequence means; RWKV:
      the WKV kernel with k = 0); `()` for attention, whose prior without a brake is uniform (what
      metrics assume when they get no prior).
  """

  routings: tuple[Routing, ...]
  hidden_states: tuple[jax.Array, ...]
  priors: tuple[Routing, ...] = ()


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


def routing_mask(token_mask: jax.Array, causal: bool) -> jax.Array:
  """Bool `[B, 1, T, T]`: real target i may use real source j (and j <= i if `causal`)."""
  real = token_mask.astype(bool)
  mask = real[:, None, :, None] & real[:, None, None, :]
  if causal:
    mask = mask & jnp.tril(jnp.ones((real.shape[-1],) * 2, bool))
  return mask


def attention(q: jax.Array, k: jax.Array, v: jax.Array, token_mask: jax.Array, causal: bool,
              scale: float) -> tuple[jax.Array, Routing]:
  """`routers.softmax_attention` with scores `scale * q.k`, over the real tokens of each sequence.

  Args:
    q, k, v: `[B, H, T, K]`.
    token_mask: `[B, T]`, 1 for real tokens, 0 for padding.
    causal: decoder (True) or encoder (False) attention.
    scale: multiplier of the dot products (`1/sqrt(K)`, or GPT-2's per-layer variant).

  Returns:
    `out [B, H, T, K]` and the `Routing` (module docstring). Padding sources get weight 0 from every
    target. The mask rows of padding targets are all False, so metrics ignore them, while their
    weights hold what Hugging Face computes: the padding token attending to the real sources it may
    see or, with none (left padding in a decoder), uniform weights `1/T` over all sources.
  """
  real = token_mask.astype(bool)
  q32, k32, v32 = (x.astype(jnp.float32) for x in (q, k, v))  # softmax in float32, as HF does
  q_scaled = q32 * (scale * math.sqrt(q.shape[-1]))  # "dot" divides by sqrt(K)
  out, routing = routers.softmax_attention(q_scaled, k32, v32, causal=causal,
                                           mask=real[:, None, None, :])
  has_source = jnp.any(routing.mask, axis=-1, keepdims=True)
  weights = jnp.where(has_source, routing.weights, 1.0 / q.shape[-2])
  out = jnp.where(has_source, out, jnp.mean(v32, axis=-2, keepdims=True))
  return out.astype(v.dtype), Routing(weights=weights, mask=routing_mask(token_mask, causal),
                                      key_norms=routing.key_norms)


@flax.struct.dataclass
class LayerOutput:
  """What one layer's block returns beside its carry.

  Attributes:
    hidden: `[B, T, D]` the layer's output (for the last layer, before the final norm).
    routing: the layer's `Routing` (module docstring).
    prior: the layer's positional-prior `Routing` (`ForwardOutput.priors`), or None (attention).
  """

  hidden: jax.Array
  routing: Routing
  prior: Routing | None = None


def scan_forward(arch, params: dict, token_ids: jax.Array, token_mask: jax.Array,
                 cfg) -> ForwardOutput:
  """The whole forward of architecture module `arch` over params with every layer in memory:
  `arch.embed`, `arch.block` scanned over the `[L]`-stacked `params["layers"]`, `arch.final`.

  Each architecture module defines

    embed(params, token_ids, token_mask, cfg) -> (carry, embeddings [B, T, D])
    block(carry, layer_params, index, token_mask, cfg) -> (carry, LayerOutput)   index: int32 []
    final(params, carry, cfg) -> the last layer's final-normed output [B, T, D]

  so that `rc_jax.pretrained.streaming` can run the same blocks one layer at a time.
  """
  carry, embeddings = arch.embed(params, token_ids, token_mask, cfg)

  def step(carry, inputs):
    layer_params, index = inputs
    return arch.block(carry, layer_params, index, token_mask, cfg)

  carry, stacked = jax.lax.scan(step, carry,
                                (params["layers"], jnp.arange(cfg.num_layers, dtype=jnp.int32)))
  final = arch.final(params, carry, cfg)
  outputs = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(cfg.num_layers)]
  hidden = (embeddings,) + tuple(out.hidden for out in outputs[:-1]) + (final,)
  priors = tuple(out.prior for out in outputs) if outputs[0].prior is not None else ()
  return ForwardOutput(routings=tuple(out.routing for out in outputs), hidden_states=hidden,
                       priors=priors)


def lm_logits(params: dict, final_hidden: jax.Array, head: str, *, tied: bool) -> jax.Array:
  """LM logits `[..., V]` (float32) of final-normed hidden states: `final_hidden @ W^T` with `W` the
  tied `params["embeddings"]`, or `params[head]` (ValueError naming it when the checkpoint was saved
  without its LM head)."""
  weight = params["embeddings"] if tied else params.get(head)
  if weight is None:
    raise ValueError(f"this checkpoint has no {head}.weight (saved without its LM head, with "
                     "tie_word_embeddings false): no logits")
  return (final_hidden.astype(weight.dtype) @ weight.T).astype(jnp.float32)

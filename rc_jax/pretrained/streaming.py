"""Running a pretrained forward one layer at a time, with one layer's weights in memory.

`run_layers` calls the architecture's `embed`, then its `block` for layer 0, 1, ... with that
layer's params fetched by `layer_params(i)` (read from the checkpoint, or drawn for the random-init
null) just before it runs and dropped after, then `final` on the last carry. Each of the three is
compiled once per architecture, config and probe shape: every layer has the same shapes, and the
layer index is a traced argument. Peak host memory is the top-level tensors (embeddings), one
layer's params, the residual stream and one layer's routing, instead of every layer's params and
every layer's `[B, H, T, T]` routing (`layers.scan_forward`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from rc_jax.pretrained.layers import LayerOutput


@functools.partial(jax.jit, static_argnames=("arch", "cfg"))
def embed(arch, params: dict[str, Any], token_ids: jax.Array, token_mask: jax.Array,
          cfg) -> tuple[Any, jax.Array]:
  """`arch.embed`, compiled: `(carry, embeddings [B, T, D])`."""
  return arch.embed(params, token_ids, token_mask, cfg)


@functools.partial(jax.jit, static_argnames=("arch", "cfg"))
def _block(arch, carry, layer_params: dict[str, jax.Array], index: jax.Array,
           token_mask: jax.Array, cfg) -> tuple[Any, LayerOutput]:
  return arch.block(carry, layer_params, index, token_mask, cfg)


@functools.partial(jax.jit, static_argnames=("arch", "cfg"))
def _final(arch, params: dict[str, Any], carry, cfg) -> jax.Array:
  return arch.final(params, carry, cfg)


def run_layers(arch, params: dict[str, Any], layer_params: Callable[[int], dict[str, jax.Array]],
               token_ids: jax.Array, token_mask: jax.Array, cfg) -> Iterator[LayerOutput]:
  """Yields each layer's `LayerOutput`, layer 0 first; the last one's `hidden` is final-normed
  (Hugging Face's `hidden_states[-1]`), so the l-th output's `hidden` is `hidden_states[l + 1]`.

  Args:
    arch: the architecture module (`embed`, `block`, `final`; see `layers.scan_forward`).
    params: the top-level tensors (no `"layers"` entry needed).
    layer_params: `i -> {name: array}`, layer i's tensors as `params["layers"][name][i]`.
    token_ids, token_mask: `[B, T]` ints and 1 = real token.
    cfg: the architecture's config.
  """
  carry, _ = embed(arch, params, token_ids, token_mask, cfg)
  for index in range(cfg.num_layers):
    carry, out = _block(arch, carry, layer_params(index), jnp.int32(index), token_mask, cfg)
    if index == cfg.num_layers - 1:
      out = out.replace(hidden=_final(arch, params, carry, cfg))
    yield out

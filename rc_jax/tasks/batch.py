"""The batch record every sequence task returns, and the BOS convention."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

BOS = 0  # token id reserved for the beginning-of-sequence token at position 0; content ids are >= 1


@flax.struct.dataclass
class Batch:
  """One batch of next-token prediction.

  Attributes:
    inputs: int32 `[B, T]`, `tokens[:, :-1]`; `inputs[:, 0] == BOS`.
    targets: int32 `[B, T]`, `tokens[:, 1:]`: `targets[:, i]` is the token after `inputs[:, i]`.
    loss_mask: float32 `[B, T]`, 1 where the target is scored, else 0.
  """

  inputs: jax.Array
  targets: jax.Array
  loss_mask: jax.Array


def with_bos(content_BxT: jax.Array) -> jax.Array:
  """Prepends the BOS token: int `[B, T]` content -> int32 `[B, T+1]` tokens."""
  bos_Bx1 = jnp.full((content_BxT.shape[0], 1), BOS, dtype=jnp.int32)
  return jnp.concatenate([bos_Bx1, content_BxT.astype(jnp.int32)], axis=1)


def batch_from_tokens(tokens_BxT1: jax.Array, loss_mask_T: jax.Array | None = None) -> Batch:
  """Splits int `[B, T+1]` tokens into a Batch.

  Args:
    tokens_BxT1: int `[B, T+1]` sequences starting with BOS.
    loss_mask_T: optional `[T]` (or `[B, T]`) mask of the scored targets; all ones when omitted.

  Returns:
    Batch with `[B, T]` fields.
  """
  tokens = tokens_BxT1.astype(jnp.int32)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  if loss_mask_T is None:
    loss_mask = jnp.ones(inputs.shape, jnp.float32)
  else:
    loss_mask = jnp.broadcast_to(jnp.asarray(loss_mask_T, jnp.float32), inputs.shape)
  return Batch(inputs=inputs, targets=targets, loss_mask=loss_mask)

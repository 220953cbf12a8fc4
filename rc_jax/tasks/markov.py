"""Zipf/Markov-chain language model: a fixed random chain over the content tokens."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import checks


def zipf_transition_matrix(task_key: jax.Array, vocab_size: int,
                           exponent: float = 1.0) -> jax.Array:
  """A fixed random transition matrix whose rows follow a Zipf law.

  Every row holds the probabilities `r**-exponent / Z` (rank r = 1..vocab_size-1) over the content
  tokens 1..vocab_size-1, in a random order of its own. The BOS column is zero (BOS is never
  emitted); the BOS row is the distribution of the first content token.

  Args:
    task_key: PRNG key fixing the chain (keep it apart from batch keys so that every batch and every
      run of a sweep sees the same chain).
    vocab_size: V, number of token ids including BOS (>= 2).
    exponent: Zipf exponent (>= 0; 0 gives uniform rows).

  Returns:
    float32 `[V, V]`, `P[i, j]` = probability that token j follows token i; rows sum to 1.
  """
  vocab_size = checks.check_int("vocab_size", vocab_size, 2)
  exponent = checks.check_float("exponent", exponent, 0.0)
  ranks_C = jnp.arange(1, vocab_size, dtype=jnp.float32)
  profile_C = ranks_C**-exponent
  profile_C = profile_C / profile_C.sum()
  row_keys = jax.random.split(task_key, vocab_size)
  content_VxC = jax.vmap(jax.random.permutation, in_axes=(0, None))(row_keys, profile_C)
  return jnp.pad(content_VxC, ((0, 0), (1, 0)))


def sample_chain(key: jax.Array, logits_VxV: jax.Array, is_trigger_V: jax.Array, *, batch_size: int,
                 seq_len: int) -> jax.Array:
  """Samples sequences of a Markov chain with optional back-copy triggers.

  Token t+1 is drawn from `softmax(logits[token t])`, except after a trigger token, where it copies
  token t-1 (the token before the trigger).

  Args:
    key: PRNG key for this batch.
    logits_VxV: float `[V, V]` unnormalised log transition probabilities (-inf: impossible move).
    is_trigger_V: bool `[V]`, True for trigger tokens (all False for a plain chain).
    batch_size: B.
    seq_len: T, the number of sampled tokens after BOS.

  Returns:
    int32 `[B, T+1]` sequences starting with BOS.
  """
  bos_B = jnp.full((batch_size,), batch_lib.BOS, dtype=jnp.int32)
  # `categorical(k, logits) == argmax(logits + gumbel(k, logits.shape))`: drawing every step's noise
  # before the scan gives the same tokens and keeps the random-bit generator out of the sequential
  # loop (on CPU it is a rolled loop of its own, ~20% of a small model's training step).
  noise_TxBxV = jax.vmap(lambda k: jax.random.gumbel(k, (batch_size, logits_VxV.shape[-1]),
                                                     logits_VxV.dtype))(jax.random.split(key, seq_len))

  def step(carry, noise_BxV):
    before, current = carry
    drawn = jnp.argmax(logits_VxV[current] + noise_BxV, axis=-1).astype(jnp.int32)
    following = jnp.where(is_trigger_V[current], before, drawn)
    return (current, following), following

  _, content_TxB = jax.lax.scan(step, (bos_B, bos_B), noise_TxBxV)
  return batch_lib.with_bos(content_TxB.T)


def markov_task(task_key: jax.Array, *, vocab_size: int, seq_len: int, batch_size: int,
                exponent: float = 1.0) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds `sample(key) -> Batch` of a fixed Zipf Markov chain (see `zipf_transition_matrix`).

  Args:
    task_key: PRNG key fixing the transition matrix.
    vocab_size: V including BOS (>= 2).
    seq_len: T, the model's input length (>= 1).
    batch_size: B (>= 1).
    exponent: Zipf exponent of every row (>= 0).

  Returns:
    A pure function of a batch key returning a Batch with `[B, T]` fields; every target is scored.
  """
  seq_len = checks.check_int("seq_len", seq_len, 1)
  batch_size = checks.check_int("batch_size", batch_size, 1)
  logits_VxV = jnp.log(zipf_transition_matrix(task_key, vocab_size, exponent))
  no_triggers_V = jnp.zeros((vocab_size,), dtype=bool)

  def sample(key: jax.Array) -> batch_lib.Batch:
    tokens = sample_chain(key, logits_VxV, no_triggers_V, batch_size=batch_size, seq_len=seq_len)
    return batch_lib.batch_from_tokens(tokens)

  return sample

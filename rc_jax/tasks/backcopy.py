"""Bigram-backcopy (Guo et al. 2024, "active-dormant heads"): a Markov chain with copy triggers.

Sequences follow a fixed Zipf Markov chain (`markov.zipf_transition_matrix`), except that after a
trigger token the next token copies the token before the trigger. A copying head has work only after
triggers and is dormant elsewhere: the setting where attention sinks on BOS form fastest.

Trigger tokens are the ids `1..n_triggers`. The first content token is never a trigger, so the token
before a trigger is always a non-trigger content token and copies never chain.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import checks
from rc_jax.tasks import markov


def trigger_mask(vocab_size: int, n_triggers: int) -> jax.Array:
  """bool `[vocab_size]`, True for the trigger tokens `1..n_triggers`."""
  ids_V = jnp.arange(vocab_size)
  return (ids_V >= 1) & (ids_V <= n_triggers)


def bigram_backcopy_task(task_key: jax.Array, *, vocab_size: int, seq_len: int, batch_size: int,
                         n_triggers: int = 3,
                         exponent: float = 1.0) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds `sample(key) -> Batch` of the bigram-backcopy task.

  Args:
    task_key: PRNG key fixing the chain (the same chain as `markov_task` with this key).
    vocab_size: V including BOS; needs BOS, the triggers and at least one other token.
    seq_len: T, the model's input length (>= 1).
    batch_size: B (>= 1).
    n_triggers: number of trigger tokens (ids 1..n_triggers, >= 1).
    exponent: Zipf exponent of the chain's rows (>= 0).

  Returns:
    A pure function of a batch key returning a Batch with `[B, T]` fields; every target is scored.
  """
  n_triggers = checks.check_int("n_triggers", n_triggers, 1)
  vocab_size = checks.check_int("vocab_size", vocab_size, 2)
  if vocab_size < n_triggers + 2:
    raise ValueError(f"vocab_size={vocab_size} is too small for n_triggers={n_triggers}: need at "
                     f"least n_triggers + 2 (BOS, the triggers and one other token)")
  seq_len = checks.check_int("seq_len", seq_len, 1)
  batch_size = checks.check_int("batch_size", batch_size, 1)
  is_trigger_V = trigger_mask(vocab_size, n_triggers)
  logits_VxV = jnp.log(markov.zipf_transition_matrix(task_key, vocab_size, exponent))
  first_V = jnp.where(is_trigger_V, -jnp.inf, logits_VxV[batch_lib.BOS])
  logits_VxV = logits_VxV.at[batch_lib.BOS].set(first_V)

  def sample(key: jax.Array) -> batch_lib.Batch:
    tokens = markov.sample_chain(key, logits_VxV, is_trigger_V, batch_size=batch_size,
                                 seq_len=seq_len)
    return batch_lib.batch_from_tokens(tokens)

  return sample

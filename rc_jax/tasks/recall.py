"""Associative recall: key-value pairs, then queries whose answer is the paired value.

Layout of the `[B, T+1]` tokens (P = n_pairs):

    position 0            BOS
    positions 1 .. 2P     k_1 v_1 k_2 v_2 ... k_P v_P   (keys distinct within a sequence)
    positions 2P+1 .. T   q_1 a_1 q_2 a_2 ...           (q_j one of the P keys, a_j its value)

Key tokens are the ids `1..K` with `K = (vocab_size - 1) // 2`, value tokens the ids `K+1..V-1`.
Queries are drawn uniformly (with replacement) from the sequence's keys and fill the rest of the
sequence; when `T - 2P` is odd the last token is a query whose answer falls outside the window. Only
the answers are scored: `loss_mask[:, i] == 1` exactly where `inputs[:, i]` is a query key, so
`targets[:, i]` is its value.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import checks


def associative_recall_task(*, vocab_size: int, seq_len: int, batch_size: int,
                            n_pairs: int | None = None) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds `sample(key) -> Batch` of the associative-recall task (layout in the module docstring).

  Args:
    vocab_size: V including BOS (>= 3: at least one key and one value token).
    seq_len: T, the model's input length (>= 2 * n_pairs + 2, so at least one answer is scored).
    batch_size: B (>= 1).
    n_pairs: P, key-value pairs per sequence (<= the number of key tokens). Default: as many as the
      key vocabulary and `seq_len` allow while leaving room for one query and its answer.

  Returns:
    A pure function of a batch key returning a Batch with `[B, T]` fields; only answers are scored.
  """
  vocab_size = checks.check_int("vocab_size", vocab_size, 3)
  seq_len = checks.check_int("seq_len", seq_len, 4)
  batch_size = checks.check_int("batch_size", batch_size, 1)
  n_keys = (vocab_size - 1) // 2
  if n_pairs is None:
    n_pairs = min(n_keys, (seq_len - 2) // 2)
  n_pairs = checks.check_int("n_pairs", n_pairs, 1)
  if n_pairs > n_keys:
    raise ValueError(f"vocab_size={vocab_size} is too small for n_pairs={n_pairs}: it has {n_keys} "
                     f"key tokens and keys must be distinct within a sequence")
  if 2 * n_pairs + 2 > seq_len:
    raise ValueError(f"seq_len={seq_len} is too short for n_pairs={n_pairs}: need at least "
                     f"2 * n_pairs + 2 = {2 * n_pairs + 2} (the pairs, one query and its answer)")
  n_query_tokens = seq_len - 2 * n_pairs
  n_asks = (n_query_tokens + 1) // 2  # queries, including a trailing one without its answer
  n_answers = n_query_tokens // 2
  answer_targets = 2 * n_pairs + 1 + 2 * jnp.arange(n_answers)  # target index of each answer
  loss_mask_T = jnp.zeros((seq_len,), jnp.float32).at[answer_targets].set(1.0)

  def sample(key: jax.Array) -> batch_lib.Batch:
    order_key, value_key, ask_key = jax.random.split(key, 3)
    order_BxK = jnp.argsort(jax.random.uniform(order_key, (batch_size, n_keys)), axis=-1)
    keys_BxP = order_BxK[:, :n_pairs] + 1
    values_BxP = jax.random.randint(value_key, (batch_size, n_pairs), n_keys + 1, vocab_size)
    which_BxA = jax.random.randint(ask_key, (batch_size, n_asks), 0, n_pairs)
    asked_BxA = jnp.take_along_axis(keys_BxP, which_BxA, axis=1)
    answers_BxA = jnp.take_along_axis(values_BxP, which_BxA, axis=1)
    pairs = jnp.stack([keys_BxP, values_BxP], axis=-1).reshape(batch_size, 2 * n_pairs)
    queries = jnp.stack([asked_BxA, answers_BxA], axis=-1).reshape(batch_size, 2 * n_asks)
    content_BxT = jnp.concatenate([pairs, queries[:, :n_query_tokens]], axis=1)
    return batch_lib.batch_from_tokens(batch_lib.with_bos(content_BxT), loss_mask_T)

  return sample

"""Uniformly random content tokens after BOS: nothing to learn beyond the unigram."""

from __future__ import annotations

from typing import Callable

import jax

from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import checks


def random_tokens_task(*, vocab_size: int, seq_len: int,
                       batch_size: int) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds `sample(key) -> Batch` of BOS followed by i.i.d. uniform tokens in 1..vocab_size-1.

  Args:
    vocab_size: number of token ids including BOS (>= 2).
    seq_len: T, the model's input length (>= 1).
    batch_size: B (>= 1).

  Returns:
    A pure function of a PRNG key returning a Batch with `[B, T]` fields; every target is scored.
  """
  vocab_size = checks.check_int("vocab_size", vocab_size, 2)
  seq_len = checks.check_int("seq_len", seq_len, 1)
  batch_size = checks.check_int("batch_size", batch_size, 1)

  def sample(key: jax.Array) -> batch_lib.Batch:
    content_BxT = jax.random.randint(key, (batch_size, seq_len), 1, vocab_size)
    return batch_lib.batch_from_tokens(batch_lib.with_bos(content_BxT))

  return sample

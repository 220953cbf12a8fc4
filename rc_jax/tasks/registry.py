"""`make_sequence_task`: one entry point to every synthetic sequence task by name."""

from __future__ import annotations

from typing import Callable

import jax

from rc_jax.tasks import backcopy
from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import markov
from rc_jax.tasks import random_tokens
from rc_jax.tasks import recall

# name -> builder(task_key, *, vocab_size, seq_len, batch_size, **options)
_BUILDERS = {
    "random_tokens": lambda task_key, **kwargs: random_tokens.random_tokens_task(**kwargs),
    "markov": markov.markov_task,
    "bigram_backcopy": backcopy.bigram_backcopy_task,
    "associative_recall": lambda task_key, **kwargs: recall.associative_recall_task(**kwargs),
}
SEQUENCE_TASKS = tuple(_BUILDERS)


def make_sequence_task(name: str, *, vocab_size: int, seq_len: int, batch_size: int,
                       task_key: jax.Array, **options) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds the sampler of a synthetic sequence task.

  Args:
    name: one of `SEQUENCE_TASKS`.
    vocab_size: V, number of token ids including BOS (id 0).
    seq_len: T, the model's input length.
    batch_size: B.
    task_key: PRNG key fixing the task itself (e.g. the Markov chain), kept apart from the batch
      keys so that every batch and every run of a sweep sees the same task. Unused by the tasks
      without a fixed structure (`random_tokens`, `associative_recall`).
    **options: task-specific keyword options (`exponent` for the Markov tasks, `n_triggers` for
      `bigram_backcopy`, `n_pairs` for `associative_recall`).

  Returns:
    A pure, jit- and vmap-friendly `sample(key) -> Batch` with `[B, T]` fields and
    `inputs[:, 0] == BOS`.

  Raises:
    ValueError: unknown name, or sizes the task cannot use.
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown sequence task {name!r}; known tasks: {', '.join(SEQUENCE_TASKS)}")
  return _BUILDERS[name](task_key, vocab_size=vocab_size, seq_len=seq_len, batch_size=batch_size,
                         **options)

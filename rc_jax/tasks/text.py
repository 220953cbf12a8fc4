"""Byte-level language modelling on a local text file (random windows, BOS then bytes + 1)."""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.tasks import batch as batch_lib
from rc_jax.tasks import checks

TEXT_VOCAB_SIZE = 257  # BOS = 0, then byte b as token b + 1


def text_file_task(path: str | os.PathLike, *, seq_len: int,
                   batch_size: int) -> Callable[[jax.Array], batch_lib.Batch]:
  """Builds `sample(key) -> Batch` of random byte windows from a local file.

  The file is read once into a uint8 device array. Each sequence is BOS followed by `seq_len`
  consecutive bytes (as tokens byte + 1, vocabulary `TEXT_VOCAB_SIZE`) starting at a uniformly
  random offset. The array is captured by `sample`, so jitting it embeds the file in the program:
  meant for small corpora (tens of MB at most).

  Args:
    path: the text file.
    seq_len: T, the model's input length (>= 1); the file must hold at least T bytes.
    batch_size: B (>= 1).

  Returns:
    A pure function of a batch key returning a Batch with `[B, T]` fields; every target is scored.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: the file is shorter than `seq_len` bytes, or bad sizes.
  """
  seq_len = checks.check_int("seq_len", seq_len, 1)
  batch_size = checks.check_int("batch_size", batch_size, 1)
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"text file not found: {path!r}")
  data = np.fromfile(path, dtype=np.uint8)
  if data.size < seq_len:
    raise ValueError(f"text file {path!r} has {data.size} bytes, fewer than seq_len={seq_len}")
  bytes_L = jnp.asarray(data)
  n_starts = data.size - seq_len + 1

  def sample(key: jax.Array) -> batch_lib.Batch:
    starts_B = jax.random.randint(key, (batch_size,), 0, n_starts)
    windows_BxT = jax.vmap(lambda start: jax.lax.dynamic_slice_in_dim(bytes_L, start, seq_len))(
        starts_B)
    return batch_lib.batch_from_tokens(batch_lib.with_bos(windows_BxT.astype(jnp.int32) + 1))

  return sample

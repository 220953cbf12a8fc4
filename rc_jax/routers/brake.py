"""The positional brake shared by all routers.

Every router takes one scalar brake `beta >= 0` that enters additively in log-routing space:

    log A_ij  <-  log A_ij - beta * distance(i, j)

so `beta = 0` is "no brake" and larger `beta` favours nearby sources. The brake carries no content:
it decides *when* concentration sets in, not *whether* (the paper's claim under test).

`beta` is a traced scalar (so sweeps vmap over it in one compilation). Only concrete Python or NumPy
values can be checked here; traced values are validated where the sweep config is built.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def check_brake(brake) -> jax.Array:
  """Returns `brake` as a float32 array, raising ValueError for a concrete negative or non-finite one."""
  if isinstance(brake, numbers.Number) or isinstance(brake, np.ndarray):
    value = np.asarray(brake, dtype=np.float64)
    if not np.all(np.isfinite(value)) or np.any(value < 0):
      raise ValueError(f"brake must be a finite number >= 0, got {brake!r}")
  return jnp.asarray(brake, dtype=jnp.float32)


def lag_distance(n_targets: int, n_sources: int, *, causal: bool = True) -> jax.Array:
  """Token distance `i - j` as float32 `[n_targets, n_sources]`.

  Targets are aligned to the end of the sources (target i sits at position n_sources - n_targets + i),
  which is the usual convention when queries are the last tokens of a longer key sequence. With
  `causal=False` the distance is `|i - j|`. Entries with j > i (causal) are negative; callers mask them.
  """
  target_pos = jnp.arange(n_targets) + (n_sources - n_targets)
  lag = target_pos[:, None] - jnp.arange(n_sources)[None, :]
  lag = lag if causal else jnp.abs(lag)
  return lag.astype(jnp.float32)


def causal_mask(n_targets: int, n_sources: int) -> jax.Array:
  """Bool `[n_targets, n_sources]`: target i may use source j iff j <= its position (end-aligned)."""
  return lag_distance(n_targets, n_sources, causal=True) >= 0

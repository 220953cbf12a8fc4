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


HEAD_SLOPES = ("shared", "alibi")


def alibi_slopes(n_heads: int) -> np.ndarray:
  """ALiBi head slopes (Press et al. 2022) as float32 `[n_heads]`.

  For `H` a power of two, `m_h = 2^(-8h/H)`, h = 1..H. Otherwise the paper's rule: the slopes of
  the largest power of two `P < H`, then every other slope of `2P` (`2^(-4h/P)`, h = 1, 3, 5, ...)
  until there are `H`.
  """
  if not isinstance(n_heads, (int, np.integer)) or isinstance(n_heads, bool) or n_heads < 1:
    raise ValueError(f"n_heads must be an integer >= 1, got {n_heads!r}")

  def geometric(n):
    return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

  power = 2 ** int(np.floor(np.log2(n_heads)))
  slopes = geometric(power) + geometric(2 * power)[0::2][:n_heads - power]
  return np.asarray(slopes, np.float32)


def head_slopes(kind: str, n_heads: int) -> np.ndarray | None:
  """Per-head brake multipliers for `softmax_attention(..., slopes=...)`.

  `"shared"`: None (every head brakes by `beta`). `"alibi"`: the ALiBi slopes divided by their
  mean, so head h brakes by `beta * m_h / mean(m)`: the heads span ALiBi's range of locality (a
  factor `2^(8(H-1)/H)` between the first and the last) while the mean brake over heads stays
  `beta`, so a brake sweep reads the same on both (`beta = mean(m)` gives ALiBi's own slopes).
  """
  if kind not in HEAD_SLOPES:
    raise ValueError(f"unknown brake_slopes {kind!r}; expected one of {HEAD_SLOPES}")
  if kind == "shared":
    return None
  slopes = alibi_slopes(n_heads)
  return slopes / np.mean(slopes)


def head_brake(beta: jax.Array, slopes) -> jax.Array:
  """`beta` (scalar) or `beta * slopes[h]` shaped `[H, 1, 1]` to broadcast over `[..., H, T, S]`."""
  if slopes is None:
    return beta
  return beta * jnp.asarray(slopes, jnp.float32)[:, None, None]

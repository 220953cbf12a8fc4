"""First-order linear recurrences `h_t = a_t * h_{t-1} + b_t` over a time axis.

Shared by the recurrent routers (selective SSM, ...). Two interchangeable back-ends that agree in
values and gradients up to float32 rounding:

  "scan"         `lax.scan` over time: O(T) sequential steps, O(1) extra memory per step.
  "associative"  `lax.associative_scan` with the combine
                     (a1, b1) . (a2, b2) = (a1 * a2, a2 * b1 + b2)     (1 earlier than 2)
                 O(log T) depth, better on accelerators for long T.

The recurrence starts from `h_{-1} = 0`, so `h_0 = b_0` and
`h_t = sum_{s <= t} (prod_{r = s+1..t} a_r) b_s`. Everything is computed and returned in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

BACKENDS = ("scan", "associative")


def check_backend(backend: str) -> str:
  """Returns `backend`, raising ValueError unless it is one of `BACKENDS`."""
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
  return backend


def linear_recurrence(a, b, *, axis: int = 0, backend: str = "scan") -> jax.Array:
  """Solves `h_t = a_t * h_{t-1} + b_t` (elementwise, `h_{-1} = 0`) along `axis`.

  Args:
    a: decay factors, any shape with the time axis at `axis`.
    b: inputs, same shape as `a`.
    axis: the time axis (negative values count from the end).
    backend: `"scan"` or `"associative"` (see the module docstring).

  Returns:
    float32 `h`, same shape as `a` and `b`.
  """
  check_backend(backend)
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape:
    raise ValueError(f"a and b must have the same shape, got a {a.shape} vs b {b.shape}")
  if not -a.ndim <= axis < a.ndim:
    raise ValueError(f"axis {axis} is out of range for arrays of rank {a.ndim}")
  if backend == "associative":
    return lax.associative_scan(_combine, (a, b), axis=axis)[1]
  h = _sequential_scan(jnp.moveaxis(a, axis, 0), jnp.moveaxis(b, axis, 0))
  return jnp.moveaxis(h, 0, axis)


def _combine(earlier, later):
  """Composes two affine maps `h -> a h + b`: first `earlier`, then `later`."""
  a1, b1 = earlier
  a2, b2 = later
  return a1 * a2, a2 * b1 + b2


def _sequential_scan(a_Tx, b_Tx) -> jax.Array:
  """`linear_recurrence` with time on axis 0, by `lax.scan`."""

  def step(h, ab):
    a_t, b_t = ab
    h = a_t * h + b_t
    return h, h

  _, h_Tx = lax.scan(step, jnp.zeros(b_Tx.shape[1:], b_Tx.dtype), (a_Tx, b_Tx))
  return h_Tx

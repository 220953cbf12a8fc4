"""Selective state-space model (Mamba S6) as a router over time.

Per channel c and state index n (x `[..., T, C]`, state size N, `A = -exp(a_log)` `[C, N]`):

  selective (S6):     delta_t = softplus(x_t @ delta_proj + delta_bias)      [..., T, C]
                      B_t     = x_t @ b_proj                                  [..., T, N]
                      C_t     = x_t @ c_proj                                  [..., T, N]
  frozen (ablation):  delta_t = softplus(delta_bias), B_t = b_static, C_t = c_static  (no x)

  dA_t[c, n] = exp(delta_t[c] A[c, n]) * exp(-beta)     (ZOH on A; the brake is one extra decay)
  h_t[c, n]  = dA_t[c, n] h_{t-1}[c, n] + delta_t[c] B_t[n] x_t[c]     (Euler on B, h_{-1} = 0)
  y_t[c]     = sum_n C_t[n] h_t[c, n] + d[c] x_t[c]

Unrolled, `y_t[c] = sum_{s <= t} K[t, s, c] x_s[c] + d[c] x_t[c]` with the implicit kernel

  K[t, s, c] = sum_n C_t[n] (prod_{r = s+1..t} dA_r[c, n]) delta_s[c] B_s[n]      (s <= t, else 0)

which carries `exp(-beta (t - s))`: the brake is `-beta * (t - s)` in log-routing space. The SSM
does not normalise, so its routing weights are the kernel's magnitudes, summed over channels and
row-normalised (see `selective_ssm`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.routers import brake as brake_lib
from rc_jax.routers import scan as scan_lib
from rc_jax.routers.routing import Routing, row_normalise


def init_ssm_params(key, channels: int, state_size: int, dtype=jnp.float32) -> dict:
  """Mamba-style initial parameters for `selective_ssm`.

  `a_log[c] = log(1..N)` (so `A[c] = -(1..N)`); `delta_bias = softplus^{-1}(dt)` with `dt`
  log-uniform in `[1e-3, 1e-1]` per channel; `delta_proj`, `b_proj`, `c_proj` ~ `N(0, 1/C)`;
  `b_static`, `c_static` ~ `N(0, 1)` (the scale of `x @ b_proj` for unit-variance x); `d = 1`.

  Returns:
    dict with `a_log [C, N]`, `d [C]`, `delta_proj [C, C]`, `delta_bias [C]`, `b_proj [C, N]`,
    `c_proj [C, N]`, `b_static [N]`, `c_static [N]`, all of `dtype`.
  """
  keys = jax.random.split(key, 6)
  proj_std = channels**-0.5
  log_dt = jax.random.uniform(keys[0], (channels,), minval=np.log(1e-3), maxval=np.log(1e-1))
  dt = jnp.exp(log_dt)
  params = {
      "a_log": jnp.broadcast_to(jnp.log(jnp.arange(1, state_size + 1.0)), (channels, state_size)),
      "d": jnp.ones((channels,)),
      "delta_proj": proj_std * jax.random.normal(keys[1], (channels, channels)),
      "delta_bias": dt + jnp.log(-jnp.expm1(-dt)),
      "b_proj": proj_std * jax.random.normal(keys[2], (channels, state_size)),
      "c_proj": proj_std * jax.random.normal(keys[3], (channels, state_size)),
      "b_static": jax.random.normal(keys[4], (state_size,)),
      "c_static": jax.random.normal(keys[5], (state_size,)),
  }
  return {name: value.astype(dtype) for name, value in params.items()}


def selective_ssm(x, params, *, brake=0.0, selective: bool = True, backend: str = "scan",
                  return_weights: bool = True):
  """Mamba S6 selective scan (module docstring) with a positional brake.

  Args:
    x: `[..., T, C]` input sequence (C channels; leading dims are free).
    params: dict as returned by `init_ssm_params` (only the entries the mode uses are read).
    brake: scalar `beta >= 0` (traced is fine): an extra per-step decay `exp(-beta)`.
    selective: `False` freezes delta, B and C to input-independent values (the selectivity-freeze
      ablation); the output is then linear in x.
    backend: `"scan"` or `"associative"`, the `linear_recurrence` back-end (same result).
    return_weights: if False, skip the O(T^2 C N) implicit kernel and return `(y, None)`.

  Returns:
    `(y [..., T, C], routing)`, y with the dtype of x (accumulated in float32), and `routing`:
      weights   `[..., T, T]`: `W[t, s] = M[t, s] / sum_s' M[t, s']` with
                `M[t, s] = sum_c |K[t, s, c]|` for s <= t, 0 for s > t (`implicit_kernel`);
      mask      `causal_mask(T, T)`, `[T, T]`;
      key_norms `[..., T]`: `||B_s||_2` over the N state entries.
    or `(y, None)` when `return_weights=False`.
  """
  scan_lib.check_backend(backend)
  beta = brake_lib.check_brake(brake)
  _check_inputs(x, params, selective)
  x32 = x.astype(jnp.float32)
  delta_TxC, b_TxN, c_TxN, log_da_TxCxN = _discretise(x32, params, beta, selective)

  bx_TxCxN = (delta_TxC * x32)[..., None] * b_TxN[..., None, :]
  h_TxCxN = scan_lib.linear_recurrence(jnp.exp(log_da_TxCxN), bx_TxCxN, axis=-3, backend=backend)
  y_TxC = jnp.einsum("...tn,...tcn->...tc", c_TxN, h_TxCxN) + params["d"].astype(jnp.float32) * x32
  y_TxC = y_TxC.astype(x.dtype)
  if not return_weights:
    return y_TxC, None

  mask_TxT = brake_lib.causal_mask(x.shape[-2], x.shape[-2])
  kernel_TxTxC = _kernel(delta_TxC, b_TxN, c_TxN, log_da_TxCxN, mask_TxT)
  weights_TxT = row_normalise(jnp.sum(jnp.abs(kernel_TxTxC), axis=-1), mask_TxT)
  key_norms_T = jnp.linalg.norm(b_TxN, axis=-1)
  return y_TxC, Routing(weights=weights_TxT, mask=mask_TxT, key_norms=key_norms_T)


def implicit_kernel(x, params, *, brake=0.0, selective: bool = True) -> jax.Array:
  """The signed token-to-token kernel `K [..., T, T, C]` of `selective_ssm` (module docstring).

  `K[..., t, s, c]` is 0 for s > t; `y_t[c] = sum_s K[t, s, c] x_s[c] + d[c] x_t[c]`. float32.
  """
  beta = brake_lib.check_brake(brake)
  _check_inputs(x, params, selective)
  delta_TxC, b_TxN, c_TxN, log_da_TxCxN = _discretise(
      x.astype(jnp.float32), params, beta, selective)
  mask_TxT = brake_lib.causal_mask(x.shape[-2], x.shape[-2])
  return _kernel(delta_TxC, b_TxN, c_TxN, log_da_TxCxN, mask_TxT)


def _check_inputs(x, params, selective: bool) -> None:
  """Raises ValueError naming the argument when x or params do not fit together."""
  if x.ndim < 2:
    raise ValueError(f"x must be [..., T, C], got shape {x.shape}")
  channels = x.shape[-1]
  if "a_log" not in params or jnp.ndim(params["a_log"]) != 2:
    raise ValueError("params['a_log'] must be a [C, N] array")
  state_size = jnp.shape(params["a_log"])[-1]
  expected = {"a_log": (channels, state_size), "d": (channels,), "delta_bias": (channels,)}
  if selective:
    expected.update(delta_proj=(channels, channels), b_proj=(channels, state_size),
                    c_proj=(channels, state_size))
  else:
    expected.update(b_static=(state_size,), c_static=(state_size,))
  for name, shape in expected.items():
    if name not in params:
      raise ValueError(f"params is missing {name!r} (needed with selective={selective})")
    if jnp.shape(params[name]) != shape:
      raise ValueError(f"params[{name!r}] has shape {jnp.shape(params[name])}, expected {shape} "
                       f"for x with C={channels} channels and state size N={state_size}")


def _discretise(x32, params, beta, selective: bool):
  """Returns `delta [..., T, C]`, `B [..., T, N]`, `C [..., T, N]`, `log dA [..., T, C, N]`, f32."""
  p = {name: jnp.asarray(value, jnp.float32) for name, value in params.items()}
  if selective:
    delta_TxC = jax.nn.softplus(x32 @ p["delta_proj"] + p["delta_bias"])
    b_TxN = x32 @ p["b_proj"]
    c_TxN = x32 @ p["c_proj"]
  else:
    state_shape = x32.shape[:-1] + p["b_static"].shape
    delta_TxC = jnp.broadcast_to(jax.nn.softplus(p["delta_bias"]), x32.shape)
    b_TxN = jnp.broadcast_to(p["b_static"], state_shape)
    c_TxN = jnp.broadcast_to(p["c_static"], state_shape)
  a_CxN = -jnp.exp(p["a_log"])
  log_da_TxCxN = delta_TxC[..., None] * a_CxN - beta
  return delta_TxC, b_TxN, c_TxN, log_da_TxCxN


def _kernel(delta_TxC, b_TxN, c_TxN, log_da_TxCxN, mask_TxT) -> jax.Array:
  """Signed implicit kernel `K [..., T, T, C]` from the discretised parameters.

  `prod_{r=s+1..t} dA_r = exp(S[t, s])` with the segment sum `S[t, s] = sum_{s<r<=t} log dA_r`,
  taken as a cumulative sum over r of `log dA_r * 1[r > s]` (Mamba-2's "segsum"): its rounding
  error scales with `|S[t, s]|`, not with `|sum_{r<=t} log dA_r|` as a difference of prefix sums
  would.
  The exponent is -inf outside the causal mask, so those entries are exactly 0. Memory O(T^2 C N).
  """
  t = log_da_TxCxN.shape[-3]
  later_TxT = jnp.arange(t)[:, None] > jnp.arange(t)[None, :]
  terms_TxTxCxN = jnp.where(later_TxT[:, :, None, None], log_da_TxCxN[..., :, None, :, :], 0.0)
  segsum_TxTxCxN = jnp.cumsum(terms_TxTxCxN, axis=-4)
  decay_TxTxCxN = jnp.exp(jnp.where(mask_TxT[:, :, None, None], segsum_TxTxCxN, -jnp.inf))
  source_TxCxN = delta_TxC[..., None] * b_TxN[..., None, :]
  return jnp.einsum("...tn,...tscn,...scn->...tsc", c_TxN, decay_TxTxCxN, source_TxCxN)

"""RWKV-4-style WKV time mixing as a router over time.

Per channel c (dropped below), with learned decay rate `w >= 0`, current-token bonus `u` and brake
`beta >= 0`, target t reads source s <= t with log-weight

  logit[t, s] = k_s - (t - 1 - s) w - beta (t - s)     for s < t   (past tokens)
  logit[t, t] = u + k_t                                 for s = t   (current token, no brake)

i.e. `logit[t, s] = base[t, s] - beta (t - s)` with `base` the plain RWKV-4 exponent: past tokens
decay at the effective per-step rate `w + beta`, plus one extra `beta` for the first step back.
Then

  A[t, s] = exp(logit[t, s]) / sum_{s' <= t} exp(logit[t, s'])          (per channel)
  wkv_t   = sum_{s <= t} A[t, s] v_s,        out_t = sigmoid(r_t) * wkv_t   (gate=True)
                                             out_t = wkv_t                  (gate=False)

which for `beta = 0` is exactly RWKV-4's
`wkv_t = (sum_{s<t} e^{-(t-1-s) w + k_s} v_s + e^{u + k_t} v_t) / (same without v)`.

No bonus: passing `u = w` removes the current-token special case. Shifting a row's logits by the
constant `-w` (softmax is shift-invariant) gives `logit[t, s] = k_s - (t - s)(w + beta)` for every
s <= t: one exponential decay law from lag 0, the current token weighed like any past token.

Positional-prior null (`content=False`): `k = 0` everywhere (w, u and the brake kept), for the
routing and the output, so
`A[t, s] = softmax over s <= t of {u at s = t, -(t-1-s) w - beta (t-s) at s < t}`,
the same for every sequence.

Heads: the C channels are grouped into `n_heads` contiguous heads of `C / n_heads` channels; a
head's routing is the mean of its channels' kernels `A`.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax import lax

from rc_jax.routers import brake as brake_lib
from rc_jax.routers.routing import Routing, masked_softmax


def rwkv_mixer(r, k, v, w, u, *, brake=0.0, n_heads: int = 1, content: bool = True,
               gate: bool = True):
  """WKV time mixing (module docstring) with the "carry" brake.

  The output comes from the O(T C) recurrence in running-max (log-sum-exp) form, so no exponent
  ever exceeds 0 (stable for keys of any magnitude, gradients included). The routing weights come
  from the explicit kernel, O(T^2 C) memory (`[..., C, T, T]` float32 before the head mean).

  Args:
    r: `[..., T, C]` receptance (gate, through a sigmoid); may be None when `gate=False`.
    k: `[..., T, C]` keys (log-weights of the sources).
    v: `[..., T, C]` values.
    w: `[C]` per-channel decay rate per step, `>= 0`: callers parametrise it, e.g. pass
      `exp(decay_param)` (not checked, it may be traced).
    u: `[C]` per-channel bonus of the current token (`u = w`: no bonus, see module docstring).
    brake: scalar `beta >= 0` (traced is fine), added to the decay of past tokens as above.
    n_heads: static number H of contiguous channel groups; C must be divisible by H.
    content: static; False replaces k by 0 (routing and output): the positional-prior null.
    gate: static; True: `out = sigmoid(r) * wkv` (RWKV-4), False: `out = wkv` (r unused).

  Returns:
    `(out [..., T, C], routing)`, out in the dtype of `r, k, v` (accumulated in float32), and
    `routing`:
      weights   `[..., H, T, T]`: per head, the per-channel kernel `A[t, s]` averaged over the
                head's channels (rows sum to 1 over s <= t); with `content=False` the same for
                every leading index;
      mask      `causal_mask(T, T)`, `[T, T]`;
      key_norms `[..., H, T]`: `||k_s||_2` over the head's channels (0 with `content=False`);
      row_mass  None (a normalising router).
  """
  _check_inputs(r, k, v, w, u, n_heads, gate)
  beta = brake_lib.check_brake(brake)
  dtype = jnp.result_type(*(a for a in (r, k, v) if a is not None))
  k, v, w, u = (jnp.asarray(a, jnp.float32) for a in (k, v, w, u))
  if not content:
    k = jnp.zeros_like(k)

  wkv_TxC = wkv_recurrence(k, v, w, u, brake=beta)
  out_TxC = jax.nn.sigmoid(jnp.asarray(r, jnp.float32)) * wkv_TxC if gate else wkv_TxC

  t, c = k.shape[-2:]
  leading = k.shape[:-2]
  # the content-free kernel does not depend on the sequence: build it once, broadcast it
  kernel_CxTxT = wkv_kernel(k if content else jnp.zeros((t, c), jnp.float32), w, u, brake=beta)
  n_heads = int(n_heads)
  head_shape = kernel_CxTxT.shape[:-3] + (n_heads, c // n_heads, t, t)
  weights_HxTxT = jnp.mean(kernel_CxTxT.reshape(head_shape), axis=-3)
  weights_HxTxT = jnp.broadcast_to(weights_HxTxT, leading + (n_heads, t, t))
  k_HxTxc = jnp.moveaxis(k.reshape(leading + (t, n_heads, c // n_heads)), -2, -3)
  routing = Routing(weights=weights_HxTxT, mask=brake_lib.causal_mask(t, t),
                    key_norms=jnp.linalg.norm(k_HxTxc, axis=-1))
  return out_TxC.astype(dtype), routing


def wkv_kernel(k, w, u, *, brake=0.0) -> jax.Array:
  """Per-channel normalised kernel `A [..., C, T, T]` (`A[..., c, t, s]`, 0 for s > t), float32.

  Args as in `rwkv_mixer`. `wkv_t[c] = sum_s A[c, t, s] v_s[c]`.
  """
  beta = brake_lib.check_brake(brake)
  t = k.shape[-2]
  lag_TxT = brake_lib.lag_distance(t, t)
  w_Cx1x1 = jnp.asarray(w, jnp.float32)[:, None, None]
  u_Cx1x1 = jnp.asarray(u, jnp.float32)[:, None, None]
  base_CxTxT = jnp.where(lag_TxT == 0, u_Cx1x1, -(lag_TxT - 1) * w_Cx1x1)
  k_Cx1xT = jnp.swapaxes(jnp.asarray(k, jnp.float32), -1, -2)[..., None, :]
  logits_CxTxT = k_Cx1xT + base_CxTxT - beta * lag_TxT
  return masked_softmax(logits_CxTxT, brake_lib.causal_mask(t, t))


def wkv_recurrence(k, v, w, u, *, brake=0.0) -> jax.Array:
  """`wkv [..., T, C]` (float32) by `lax.scan` over time in running-max form.

  The carry after step t is `(num, den, p)` with
  `num = sum_{s<=t} exp(k_s - (t - s)(w + beta) - p) v_s`, `den` the same without `v_s`, and `p`
  the running maximum exponent, so every `exp` has a non-positive argument. Reading at t adds the
  current token `exp(u + k_t)` and applies the one extra `beta` of the first step back. Args as in
  `rwkv_mixer`.
  """
  beta = brake_lib.check_brake(brake)
  w_eff = jnp.asarray(w, jnp.float32) + beta
  u = jnp.asarray(u, jnp.float32)

  def step(carry, kv_t):
    num, den, p = carry
    k_t, v_t = kv_t
    past, current = p - beta, u + k_t
    p_read = jnp.maximum(past, current)
    e_past, e_current = jnp.exp(past - p_read), jnp.exp(current - p_read)
    wkv_t = (e_past * num + e_current * v_t) / (e_past * den + e_current)
    decayed = p - w_eff
    p_next = jnp.maximum(decayed, k_t)
    e_old, e_new = jnp.exp(decayed - p_next), jnp.exp(k_t - p_next)
    return (e_old * num + e_new * v_t, e_old * den + e_new, p_next), wkv_t

  k_TxC = jnp.moveaxis(jnp.asarray(k, jnp.float32), -2, 0)
  v_TxC = jnp.moveaxis(jnp.asarray(v, jnp.float32), -2, 0)
  zeros = jnp.zeros(k_TxC.shape[1:], jnp.float32)
  init = (zeros, zeros, jnp.full_like(zeros, -jnp.inf))
  _, wkv_TxC = lax.scan(step, init, (k_TxC, v_TxC))
  return jnp.moveaxis(wkv_TxC, 0, -2)


def _check_inputs(r, k, v, w, u, n_heads, gate) -> None:
  """Raises ValueError naming the argument when the shapes do not fit together."""
  if jnp.ndim(k) < 2:
    raise ValueError(f"k must be [..., T, C], got shape {jnp.shape(k)}")
  if r is None and gate:
    raise ValueError("r must be given when gate=True (out = sigmoid(r) * wkv)")
  for name, array in (("r", r), ("v", v)):
    if array is not None and jnp.shape(array) != jnp.shape(k):
      raise ValueError(f"{name} must have the shape of k {jnp.shape(k)}, got {jnp.shape(array)}")
  channels = jnp.shape(k)[-1]
  for name, array in (("w", w), ("u", u)):
    if jnp.shape(array) != (channels,):
      raise ValueError(f"{name} must have shape ({channels},) (one per channel of k), "
                       f"got {jnp.shape(array)}")
  if not isinstance(n_heads, numbers.Integral) or isinstance(n_heads, bool) or n_heads < 1:
    raise ValueError(f"n_heads must be an integer >= 1, got {n_heads!r}")
  if channels % n_heads:
    raise ValueError(f"n_heads={n_heads} must divide the {channels} channels of k")

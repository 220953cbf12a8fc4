"""Collapse metrics: pure, masked reductions over a `Routing` record or a representation.

Every metric works for every router because it reads only `Routing` (weights, mask, key_norms) or
token representations `x [..., N, D]`. All computations are float32 under `stop_gradient`.

Reduction: each metric first computes one value per leading index (e.g. per batch x head), then, with
`reduce=True` (the default), averages over all leading dims ignoring NaN. `reduce=False` returns the
per-leading-index array. A value is NaN only where the metric is undefined (documented per metric),
never because of masked entries.

Notation: `A [..., T, S]` routing weights, `M` the admissibility mask, `|M_i|` the number of sources
target i may use.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rc_jax.routers.routing import Routing

_TINY = 1e-12


def _f32(x: jax.Array) -> jax.Array:
  return jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))


def _weights_and_mask(routing: Routing) -> tuple[jax.Array, jax.Array]:
  weights = _f32(routing.weights)
  mask = jnp.broadcast_to(jnp.asarray(routing.mask, bool), weights.shape)
  return jnp.where(mask, weights, 0.0), mask


def _reduce(per_index: jax.Array, reduce: bool) -> jax.Array:
  return jnp.nanmean(per_index) if reduce else per_index


def _masked_mean(values: jax.Array, valid: jax.Array, axis: int = -1) -> jax.Array:
  """Mean of `values` over `valid` entries of `axis`; NaN where there are none."""
  count = jnp.sum(valid, axis=axis)
  total = jnp.sum(jnp.where(valid, values, 0.0), axis=axis)
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def received_mass(routing: Routing) -> jax.Array:
  """`alpha_j`: mean of `A_ij` over the targets i that may use source j. `[..., S]`.

  NaN for a source no target may use.
  """
  weights, mask = _weights_and_mask(routing)
  return _masked_mean(weights, mask, axis=-2)


def _uniform_share(mask: jax.Array) -> jax.Array:
  """Mean of `1/|M_i|` over the targets that may use each source: `[..., S]`."""
  row_count = jnp.sum(mask, axis=-1, keepdims=True)
  share = jnp.where(mask, 1.0 / jnp.maximum(row_count, 1), 0.0)
  return _masked_mean(share, mask, axis=-2)


def sink_mass(routing: Routing, reduce: bool = True) -> jax.Array:
  """`alpha_0`, the mean mass on source 0 over the targets that may use it."""
  return _reduce(received_mass(routing)[..., 0], reduce)


def sink_excess(routing: Routing, reduce: bool = True) -> jax.Array:
  """`alpha_0 / u_0`: the sink mass over what uniform routing would put on source 0.

  `u_0` is the mean of `1/|M_i|` over the targets that may use source 0, so uniform routing gives
  exactly 1 whatever the mask (causal tokens, earlier layers): a threshold on it means the same for
  every router.
  """
  _, mask = _weights_and_mask(routing)
  uniform0 = _uniform_share(mask)[..., 0]
  return _reduce(received_mass(routing)[..., 0] / uniform0, reduce)


def sink_rate(routing: Routing, eps: float = 0.3, reduce: bool = True) -> jax.Array:
  """Fraction of (leading) indices whose `alpha_0 > eps` (Gu et al. 2025; eps = 0.3)."""
  alpha0 = received_mass(routing)[..., 0]
  rate = jnp.where(jnp.isnan(alpha0), jnp.nan, (alpha0 > eps).astype(jnp.float32))
  return _reduce(rate, reduce)


def top_source_weight(routing: Routing, reduce: bool = True) -> tuple[jax.Array, jax.Array]:
  """Mean over targets of `max_j A_ij`, and its uniform baseline, the mean of `1/|M_i|`.

  Targets with no admissible source are skipped.
  """
  weights, mask = _weights_and_mask(routing)
  row_count = jnp.sum(mask, axis=-1)
  valid = row_count > 0
  top = _masked_mean(jnp.max(weights, axis=-1), valid)
  baseline = _masked_mean(1.0 / jnp.maximum(row_count, 1), valid)
  return _reduce(top, reduce), _reduce(baseline, reduce)


def routing_entropy(routing: Routing, reduce: bool = True) -> jax.Array:
  """Mean over targets of `H(A_i) / log|M_i|`: 1 = uniform, 0 = a single source.

  Targets with fewer than two admissible sources are excluded (their entropy is not informative).
  """
  weights, mask = _weights_and_mask(routing)
  row_count = jnp.sum(mask, axis=-1)
  plogp = jnp.where(weights > 0, weights * jnp.log(jnp.where(weights > 0, weights, 1.0)), 0.0)
  entropy = -jnp.sum(plogp, axis=-1)
  valid = row_count > 1
  normalised = entropy / jnp.log(jnp.maximum(row_count, 2).astype(jnp.float32))
  return _reduce(_masked_mean(normalised, valid), reduce)


def hub_count(routing: Routing, factor: float = 2.0, reduce: bool = True) -> jax.Array:
  """Number of sources whose received mass `alpha_j` exceeds `factor` x their uniform share.

  The uniform share of source j is the mean of `1/|M_i|` over the targets that may use it (what
  `alpha_j` would be under uniform routing).
  """
  _, mask = _weights_and_mask(routing)
  alpha = received_mass(routing)
  uniform = _uniform_share(mask)
  is_hub = jnp.where(jnp.isnan(alpha), False, alpha > factor * jnp.nan_to_num(uniform))
  return _reduce(jnp.sum(is_hub, axis=-1).astype(jnp.float32), reduce)


def _usable_sources(routing: Routing) -> jax.Array:
  """Bool `[..., S]`: sources at least one target may use, broadcast against key_norms."""
  mask = jnp.broadcast_to(jnp.asarray(routing.mask, bool), routing.weights.shape)
  usable = jnp.any(mask, axis=-2)
  shape = jnp.broadcast_shapes(usable.shape, routing.key_norms.shape)
  return jnp.broadcast_to(usable, shape)


def _key_norms(routing: Routing) -> tuple[jax.Array, jax.Array]:
  usable = _usable_sources(routing)
  norms = jnp.broadcast_to(_f32(routing.key_norms), usable.shape)
  return norms, usable


def key_norm_cv(routing: Routing, reduce: bool = True) -> jax.Array:
  """Coefficient of variation (population std / mean) of the usable sources' key norms."""
  norms, usable = _key_norms(routing)
  mean = _masked_mean(norms, usable)
  var = _masked_mean((norms - mean[..., None]) ** 2, usable)
  return _reduce(jnp.sqrt(var) / jnp.maximum(mean, _TINY), reduce)


def key_norm_log_spread(routing: Routing, reduce: bool = True) -> jax.Array:
  """`log(max / median)` of the usable sources' key norms."""
  norms, usable = _key_norms(routing)
  masked = jnp.where(usable, norms, jnp.nan)
  spread = jnp.log(jnp.nanmax(masked, axis=-1) / jnp.maximum(jnp.nanmedian(masked, axis=-1), _TINY))
  return _reduce(spread, reduce)


def norm_mass_correlation(routing: Routing, reduce: bool = True, min_cv: float = 1e-4) -> jax.Array:
  """Pearson correlation over usable sources between key norm and received mass `alpha_j`.

  NaN (undefined) where the key norms are equal up to `min_cv` (e.g. normalised keys) or the
  received mass is constant: a correlation with rounding noise would be meaningless.
  """
  norms, usable = _key_norms(routing)
  alpha = jnp.broadcast_to(received_mass(routing), usable.shape)
  valid = usable & ~jnp.isnan(alpha)
  alpha = jnp.where(valid, alpha, 0.0)
  norm_mean = _masked_mean(norms, valid)[..., None]
  alpha_mean = _masked_mean(alpha, valid)[..., None]
  dn = jnp.where(valid, norms - norm_mean, 0.0)
  da = jnp.where(valid, alpha - alpha_mean, 0.0)
  cov = jnp.sum(dn * da, axis=-1)
  var_n = jnp.sum(dn * dn, axis=-1)
  var_a = jnp.sum(da * da, axis=-1)
  count = jnp.maximum(jnp.sum(valid, axis=-1), 1)
  cv = jnp.sqrt(var_n / count) / jnp.maximum(jnp.abs(norm_mean[..., 0]), _TINY)
  defined = (cv > min_cv) & (var_a > _TINY)
  corr = cov / jnp.sqrt(jnp.maximum(var_n * var_a, _TINY))
  return _reduce(jnp.where(defined, corr, jnp.nan), reduce)


def effective_rank(x: jax.Array, reduce: bool = True) -> jax.Array:
  """Roy & Vetterli (2007): `exp(-sum p log p)`, `p = sigma / sum(sigma)` of uncentred `x [..., N, D]`."""
  x = _f32(x)
  if x.shape[-2] < x.shape[-1]:  # same singular values; XLA's CPU SVD is far slower on wide inputs
    x = jnp.swapaxes(x, -1, -2)
  sigma = jnp.linalg.svd(x, compute_uv=False)
  p = sigma / jnp.maximum(jnp.sum(sigma, axis=-1, keepdims=True), _TINY)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  return _reduce(jnp.exp(entropy), reduce)


def rank_collapse_residual(x: jax.Array, reduce: bool = True) -> jax.Array:
  """Dong et al. (2021): `||X - 1 mu^T||_F / ||X||_F` with `mu` the token mean of `x [..., N, D]`.

  0 when all tokens are identical; 0 for an all-zero `x`.
  """
  x = _f32(x)
  centred = x - jnp.mean(x, axis=-2, keepdims=True)
  num = jnp.sqrt(jnp.sum(centred * centred, axis=(-2, -1)))
  den = jnp.sqrt(jnp.sum(x * x, axis=(-2, -1)))
  return _reduce(num / jnp.maximum(den, _TINY), reduce)


def massive_activation_ratio(h: jax.Array, reduce: bool = True) -> jax.Array:
  """Sun et al. (2024): `max|h| / median|h|` over the tokens x features of `h [..., N, D]`."""
  magnitude = jnp.abs(_f32(h)).reshape(h.shape[:-2] + (-1,))
  ratio = jnp.max(magnitude, axis=-1) / jnp.maximum(jnp.median(magnitude, axis=-1), _TINY)
  return _reduce(ratio, reduce)


def collapse_metrics(routing: Routing, x: jax.Array | None = None, *, eps: float = 0.3,
                     hub_factor: float = 2.0) -> dict[str, jax.Array]:
  """All routing metrics (and, given `x [..., N, D]`, the representation metrics) as scalars."""
  top, uniform = top_source_weight(routing)
  out = {
      "sink_mass": sink_mass(routing),
      "sink_excess": sink_excess(routing),
      "sink_rate": sink_rate(routing, eps),
      "top_source_weight": top,
      "top_source_uniform": uniform,
      "routing_entropy": routing_entropy(routing),
      "hub_count": hub_count(routing, hub_factor),
      "key_norm_cv": key_norm_cv(routing),
      "key_norm_log_spread": key_norm_log_spread(routing),
      "norm_mass_correlation": norm_mass_correlation(routing),
  }
  if x is not None:
    out["effective_rank"] = effective_rank(x)
    out["rank_collapse_residual"] = rank_collapse_residual(x)
    out["massive_activation_ratio"] = massive_activation_ratio(x)
  return out


def onset_step(steps: jax.Array, values: jax.Array, threshold: float) -> jax.Array:
  """First logged step from which `values` stay above `threshold` to the end; inf if never.

  Args:
    steps: `[K]` logged step numbers (increasing).
    values: `[..., K]` a concentration metric at those steps; NaN counts as "not above".
    threshold: the level to cross.

  Returns:
    float32 `[...]`: `steps[k*]` for the smallest k* with `values[k] > threshold` for all k >= k*.
  """
  above = jnp.nan_to_num(jnp.asarray(values, jnp.float32), nan=-jnp.inf) > threshold
  stays_above = jnp.flip(jnp.cumprod(jnp.flip(above, -1), axis=-1), -1).astype(bool)
  first = jnp.argmax(stays_above, axis=-1)
  steps = jnp.asarray(steps, jnp.float32)
  return jnp.where(jnp.any(stays_above, axis=-1), steps[first], jnp.inf)

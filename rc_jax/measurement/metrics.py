"""Collapse metrics: pure, masked reductions over a `Routing` record or a representation.

Every metric works for every router because it reads only `Routing` (weights, mask, key_norms,
row_mass) or token representations `x [..., N, D]`. All computations are float32 under
`stop_gradient`, jit- and vmap-friendly, and never build anything larger than `[..., T, S]`.

Reduction: each metric first computes one value per leading index (e.g. per batch x head), then,
with `reduce=True` (the default), averages over all leading dims ignoring NaN. `reduce=False`
returns the per-leading-index array. A value is NaN only where the metric is undefined (documented
per metric), never because of masked entries.

Notation (per leading index): `A [T, S]` routing weights, `M` the admissibility mask, `|M_i|` the
number of sources target i may use, `m_i >= 0` the routing's `row_mass` (the mass target i reads
before row normalisation; `m_i = 1` for normalising routers, whose `row_mass` is None), `P [T, S]` a
positional prior (the router's content-free routing, `content=False`; by default the uniform routing
`P_ij = M_ij / |M_i|`).

Mass weighting (`weighted=True`): a target's contribution is weighted by `m_i`, so dormant rows of a
non-normalising router (`m_i ~ 0`, whose row-normalised weights are near-arbitrary) do not count as
full rows. For normalising routers weighted == unweighted. The literature metrics (`sink_mass`,
`sink_excess`, `sink_rate`, `top_source_weight`, `above_uniform_mass_count`) default to unweighted;
the prior-relative metrics (`sink_excess_prior`, `top_source_excess_prior`: always) and
`shared_source_count` (by default) weight targets by the ROUTING's `m_i`, on the prior's side too,
so routing and prior are compared on the same targets with the same weights (the prior's own
`row_mass` is not used).
"""

from __future__ import annotations

import numbers

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


def _target_mass(routing: Routing, weighted: bool) -> jax.Array:
  """`m_i` `[..., T]`: the routing's `row_mass` when `weighted` and present, else ones."""
  shape = routing.weights.shape[:-1]
  if not weighted or routing.row_mass is None:
    return jnp.ones(shape, jnp.float32)
  row_mass = _f32(routing.row_mass)
  try:
    return jnp.broadcast_to(row_mass, shape)
  except ValueError as e:
    raise ValueError(f"routing.row_mass: shape {row_mass.shape} does not broadcast to the targets "
                     f"{shape} of weights {routing.weights.shape}") from e


def _prior_weights(routing: Routing, prior: Routing | None) -> jax.Array:
  """`P [..., T, S]` on the routing's mask: `prior.weights`, or the uniform `M_ij / |M_i|`."""
  weights, mask = _weights_and_mask(routing)
  if prior is None:
    count = jnp.sum(mask, axis=-1, keepdims=True)
    return jnp.where(mask, 1.0 / jnp.maximum(count, 1), 0.0)
  prior_weights, prior_mask = _weights_and_mask(prior)
  try:
    shape = jnp.broadcast_shapes(prior_weights.shape, weights.shape)
  except ValueError:
    shape = None
  if shape != weights.shape:
    raise ValueError(f"prior: weights {prior_weights.shape} do not broadcast to the routing's "
                     f"weights {weights.shape}")
  return jnp.where(mask & prior_mask, prior_weights, 0.0)


def _check_number(name: str, value, low: float, high: float) -> None:
  if isinstance(value, numbers.Real) and not low <= value <= high:
    raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")


def _reduce(per_index: jax.Array, reduce: bool) -> jax.Array:
  return jnp.nanmean(per_index) if reduce else per_index


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
  """`num / den`, NaN where `den <= 0` (or is NaN)."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def _ratio_of_sums(weight: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """`sum(weight * a) / sum(weight * b)` over the last axis, NaN where the denominator is <= 0.

  Computed as `1 + sum(weight * (a - b)) / sum(weight * b)`, which is exactly 1 when `a == b`: two
  separately reduced sums may round differently under jit.
  """
  den = jnp.sum(weight * b, axis=-1)
  excess = jnp.sum(weight * (a - b), axis=-1)
  return jnp.where(den > 0, 1.0 + excess / jnp.where(den > 0, den, 1.0), jnp.nan)


def _masked_mean(values: jax.Array, valid: jax.Array, axis: int = -1) -> jax.Array:
  """Mean of `values` over `valid` entries of `axis`; NaN where there are none."""
  return _weighted_mean(values, jnp.where(valid, 1.0, 0.0), axis)


def _weighted_mean(values: jax.Array, weight: jax.Array, axis: int = -1) -> jax.Array:
  """`sum(weight * values) / sum(weight)` over `axis` (weight 0 = excluded); NaN where the weights
  sum to 0."""
  total_weight = jnp.sum(weight, axis=axis)
  total = jnp.sum(jnp.where(weight > 0, weight * values, 0.0), axis=axis)
  return _ratio(total, total_weight)


def received_mass(routing: Routing, weighted: bool = False) -> jax.Array:
  """`alpha_j = sum_i w_i M_ij A_ij / sum_i w_i M_ij`, `w_i = m_i` if `weighted` else 1. `[..., S]`.

  The (mass-weighted) mean of `A_ij` over the targets i that may use source j. NaN for a source no
  target may use (or, weighted, whose users all have `m_i = 0`).
  """
  weights, mask = _weights_and_mask(routing)
  users = jnp.where(mask, _target_mass(routing, weighted)[..., None], 0.0)
  return _weighted_mean(weights, users, axis=-2)


def _uniform_share(routing: Routing, weighted: bool = False) -> jax.Array:
  """`alpha_j` of the uniform routing: the (weighted) mean of `1/|M_i|` over the users of each
  source, `[..., S]`."""
  _, mask = _weights_and_mask(routing)
  row_count = jnp.sum(mask, axis=-1, keepdims=True)
  share = jnp.where(mask, 1.0 / jnp.maximum(row_count, 1), 0.0)
  users = jnp.where(mask, _target_mass(routing, weighted)[..., None], 0.0)
  return _weighted_mean(share, users, axis=-2)


def sink_mass(routing: Routing, reduce: bool = True, *, weighted: bool = False) -> jax.Array:
  """`alpha_0`, the (mass-weighted) mean mass on source 0 over the targets that may use it."""
  return _reduce(received_mass(routing, weighted)[..., 0], reduce)


def _sink_ratio(routing: Routing, prior_weights: jax.Array, weighted: bool) -> jax.Array:
  """Per index `sum_i w_i M_i0 A_i0 / sum_i w_i M_i0 P_i0` = `alpha_0(A) / alpha_0(P)`."""
  weights, mask = _weights_and_mask(routing)
  users = jnp.where(mask[..., 0], _target_mass(routing, weighted), 0.0)
  return _ratio_of_sums(users, weights[..., 0], prior_weights[..., 0])


def sink_excess(routing: Routing, reduce: bool = True, *, weighted: bool = False) -> jax.Array:
  """`alpha_0 / u_0`: the sink mass over what uniform routing would put on source 0.

  `u_0` is the (same-weighted) mean of `1/|M_i|` over the targets that may use source 0, so uniform
  routing gives exactly 1 whatever the mask (causal tokens, earlier layers): a threshold on it means
  the same for every router. NaN where no target may use source 0.
  """
  return _reduce(_sink_ratio(routing, _prior_weights(routing, None), weighted), reduce)


def sink_excess_prior(routing: Routing, prior: Routing | None, reduce: bool = True) -> jax.Array:
  """`alpha_0(A) / alpha_0(P)`: the sink mass over what the positional prior puts on source 0.

  Per leading index, both `alpha_0` are mass-weighted with the ROUTING's `m_i` (the same targets and
  weights on both sides), i.e. `sum_i m_i M_i0 A_i0 / sum_i m_i M_i0 P_i0`; `reduce=True` takes the
  NaN-ignoring mean of these per-index ratios (a mean of ratios, not a ratio of means). Exactly 1
  when `routing.weights == prior.weights`. `prior=None` uses the uniform routing (then it equals
  `sink_excess(weighted=True)`). NaN where the prior puts no mass on source 0.

  Args:
    routing: the routing, weights `[..., T, S]`.
    prior: its content-free routing, weights broadcastable to the same shape, or None.
    reduce: average over the leading dims.
  """
  return _reduce(_sink_ratio(routing, _prior_weights(routing, prior), True), reduce)


def sink_rate(routing: Routing, eps: float = 0.3, reduce: bool = True, *,
              weighted: bool = False) -> jax.Array:
  """Fraction of (leading) indices whose `alpha_0 > eps` (Gu et al. 2025; eps = 0.3)."""
  alpha0 = received_mass(routing, weighted)[..., 0]
  rate = jnp.where(jnp.isnan(alpha0), jnp.nan, (alpha0 > eps).astype(jnp.float32))
  return _reduce(rate, reduce)


def top_source_weight(routing: Routing, reduce: bool = True, *,
                      weighted: bool = False) -> tuple[jax.Array, jax.Array]:
  """(Mass-weighted) mean over targets of `max_j A_ij`, and its uniform baseline, the same mean of
  `1/|M_i|`.

  Targets with no admissible source are skipped; NaN where there are none (or, weighted, where
  their `m_i` are all 0).
  """
  weights, mask = _weights_and_mask(routing)
  row_count = jnp.sum(mask, axis=-1)
  target_weight = jnp.where(row_count > 0, _target_mass(routing, weighted), 0.0)
  top = _weighted_mean(jnp.max(weights, axis=-1), target_weight)
  baseline = _weighted_mean(1.0 / jnp.maximum(row_count, 1), target_weight)
  return _reduce(top, reduce), _reduce(baseline, reduce)


def top_source_excess_prior(routing: Routing, prior: Routing | None,
                            reduce: bool = True) -> jax.Array:
  """`top_source_weight(A) / top_source_weight(P)`, both weighted by the routing's `m_i`.

  Per leading index `sum_i m_i max_j A_ij / sum_i m_i max_j P_ij` over targets with an admissible
  source; `reduce=True` averages these per-index ratios ignoring NaN. Exactly 1 when
  `routing.weights == prior.weights`; `prior=None` uses the uniform routing
  (`max_j P_ij = 1/|M_i|`).
  NaN where no target has an admissible source with `m_i > 0`.
  """
  weights, mask = _weights_and_mask(routing)
  prior_weights = _prior_weights(routing, prior)
  target_weight = jnp.where(jnp.any(mask, axis=-1), _target_mass(routing, True), 0.0)
  return _reduce(_ratio_of_sums(target_weight, jnp.max(weights, axis=-1),
                                jnp.max(prior_weights, axis=-1)), reduce)


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


def above_uniform_mass_count(routing: Routing, factor: float = 2.0, reduce: bool = True, *,
                             weighted: bool = False) -> jax.Array:
  """Number of sources whose received mass `alpha_j` exceeds `factor` x their uniform share.

  The uniform share of source j is the (same-weighted) mean of `1/|M_i|` over the targets that may
  use it (what `alpha_j` would be under uniform routing). Under a causal mask this counts locality
  as well as sharing (all mass on self gives 12 at T = 32: late sources have few users, each of
  which gives them everything); `shared_source_count` counts only sources shared by many targets.
  """
  alpha = received_mass(routing, weighted)
  uniform = _uniform_share(routing, weighted)
  above = jnp.where(jnp.isnan(alpha), False, alpha > factor * jnp.nan_to_num(uniform))
  return _reduce(jnp.sum(above, axis=-1).astype(jnp.float32), reduce)


def shared_source_count(routing: Routing, prior: Routing | None = None, factor: float = 2.0,
                        min_share: float = 0.5, min_users: float = 0.5, reduce: bool = True, *,
                        weighted: bool = True) -> jax.Array:
  """Number of hubs: sources that a large share of targets over-weight relative to the prior.

  Only "choice" targets C = {i : |M_i| >= 2} take part; U_j = {i in C : M_ij} are the users of
  source j. Source j counts when
    (a) |U_j| >= max(1, min_users * |C|): sources that only a few targets may use (late tokens under
        a causal mask) never count, so locality (all mass on self / on the previous token / a decay
        kernel) is not mistaken for sharing; and
    (b) sum_{i in U_j, A_ij > factor * P_ij} w_i / sum_{i in U_j} w_i > min_share, with
        `w_i = m_i` (`weighted`, the default) or 1: more than `min_share` of the users'
        (mass-weighted) votes give j more than `factor` x their prior share `P_ij`
        (`prior.weights`, or `1/|M_i|`).
  Routing == prior gives 0 (strict `>`).

  Degenerate axes: with one target (depth routing, weights `[..., 1, S]`) "a large share of targets"
  is that target, so the count is the number of sources it gives more than `factor` x their prior
  share. With symmetric neighbourhood masks (graphs), (a) asks for sources whose K-hop neighbourhood
  covers `min_users` of the graph; for sparse graphs whose neighbourhoods are far smaller, lower
  `min_users`.

  Returns per leading index the count (float32), NaN where no target has a choice (or, weighted,
  all choice targets have `m_i = 0`); `reduce=True` averages ignoring NaN.
  """
  _check_number("min_share", min_share, 0.0, 1.0)
  _check_number("min_users", min_users, 0.0, 1.0)
  weights, mask = _weights_and_mask(routing)
  prior_weights = _prior_weights(routing, prior)
  choice = jnp.sum(mask, axis=-1) >= 2                                     # [..., T]
  n_choice = jnp.sum(choice, axis=-1)                                      # [...]
  users = mask & choice[..., None]                                         # [..., T, S]
  n_users = jnp.sum(users, axis=-2)                                        # [..., S]
  vote = jnp.where(users, _target_mass(routing, weighted)[..., None], 0.0)
  over = users & (weights > factor * prior_weights)
  over_share = _ratio(jnp.sum(jnp.where(over, vote, 0.0), axis=-2), jnp.sum(vote, axis=-2))
  enough_users = n_users >= jnp.maximum(1.0, min_users * n_choice[..., None])
  shared = enough_users & (over_share > min_share)                         # NaN share -> False
  total_vote = jnp.sum(jnp.where(choice, _target_mass(routing, weighted), 0.0), axis=-1)
  count = jnp.sum(shared, axis=-1).astype(jnp.float32)
  return _reduce(jnp.where((n_choice > 0) & (total_vote > 0), count, jnp.nan), reduce)


def _head_pooling_axes(weights: jax.Array, head_axis: int | None | str) -> tuple[int, ...]:
  """The leading axes `hub_excess` pools rows over (all leading axes but the head axis)."""
  lead = weights.ndim - 2
  if head_axis == "auto":
    head_axis = None if weights.shape[-2] == 1 or lead == 0 else -3
  if head_axis is None:
    return tuple(range(lead))
  if not -weights.ndim <= head_axis < -2 and not 0 <= head_axis < lead:
    raise ValueError(f"head_axis={head_axis} is not a leading axis of weights {weights.shape}")
  head = head_axis % weights.ndim
  return tuple(a for a in range(lead) if a != head)


def hub_excess(routing: Routing, prior: Routing | None = None, reduce: bool = True, *,
               head_axis: int | None | str = "auto") -> jax.Array:
  """Per head, the largest share of its routing mass that one source takes beyond the prior.

  The concentration statistic of the report: a sink (or any hub) is a source that receives mass
  from many targets beyond what the router's positional prior, or an even split, gives it. For one
  head, with `R` its rows (targets with `|M_i| >= 2`, over every sequence of the batch), `m_i` the
  routing's `row_mass` (1 for normalising routers), `P` the prior (uniform without one) and
  `F_ij = max(P_ij, 1 / |M_i|)` the floor a source must beat:

      E_j = sum_{i in R, M_ij} m_i (A_ij - F_ij) / sum_{i in R} m_i      hub_excess = max(0, max_j E_j)

  `E_j` is in units of routing mass: the fraction of everything the head routes that goes to source
  `j` beyond its prior share and beyond the uniform share. Properties that make it a fair
  concentration reading for every router:

  - mass, not votes: a head sinking s of every row onto one source reads about `s (1 - 1/|M_i|)`
    (0.27 for s = 0.3 on a uniform causal T = 32 base); a token-conditional sink (30% of rows
    putting 0.8 on BOS) about 0.2; a dormant head (all mass on BOS on 70% of rows) about 0.6;
  - per head: `reduce=True` takes the max over heads, so one sinking head among many is seen;
  - locality is not a hub: source j can only take mass from the rows that may use it, so a late
    source (few users under a causal mask) or self / previous-token / decay routing, whose excess
    is spread over all sources, read ~1/T (0.03 at T = 32);
  - an absolute floor: the uniform share in `F` keeps a decay router's near-zero prior share of a
    far source from turning any small mass into "excess"; there is no ratio to inflate; routing ==
    prior gives exactly 0;
  - content-free noise does not read as hubs: random logits have signed excess ~0 per source
    (attention at initialisation reads 0.01-0.10); under a brake, which makes both A and P local,
    the excess moves onto sources few rows share, and the floor absorbs the flattening that random
    logits cause on a peaked prior, so the statistic does not grow with the brake.

  Rows are pooled over the leading axes other than the head axis (batch, tokens); the head axis is
  `head_axis`: by default `-3` for routings with several targets (`[..., H, T, S]`: attention, SSM,
  RWKV `[B, H, T, T]`, graph `[H, N, N]`) and none when there is one target per leading index
  (AttnRes depth routing `[B, T, 1, S]`: every token is a row of one router), or when the weights
  are a single `[T, S]`. `None` pools every leading axis.

  Returns:
    `reduce=True`: the max over heads (NaN-ignoring; NaN if no head has a row with a choice);
    `reduce=False`: `[H]` per head (the non-pooled leading axes), NaN for a head without rows.
  """
  weights, mask = _weights_and_mask(routing)
  prior_weights = _prior_weights(routing, prior)
  choice = jnp.sum(mask, axis=-1) >= 2                                     # [..., T]
  row_weight = jnp.where(choice, _target_mass(routing, True), 0.0)         # [..., T]
  users = jnp.where(mask, row_weight[..., None], 0.0)                      # [..., T, S]
  uniform = 1.0 / jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1)    # [..., T, 1]
  floor = jnp.maximum(prior_weights, uniform)
  excess = jnp.sum(users * (weights - floor), axis=-2)                     # [..., S]
  pool = _head_pooling_axes(weights, head_axis)
  excess = jnp.sum(excess, axis=pool)                                      # [H, S]
  total = jnp.sum(row_weight, axis=(-1,) + pool)                           # [H]
  per_head = _ratio(jnp.maximum(jnp.max(excess, axis=-1), 0.0), total)
  return jnp.nanmax(per_head) if reduce else per_head


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
  """`log(max / median)` of the usable sources' key norms; NaN where every norm is 0 (a router
  without keys, e.g. a content-free prior router)."""
  norms, usable = _key_norms(routing)
  masked = jnp.where(usable, norms, jnp.nan)
  largest = jnp.nanmax(masked, axis=-1)
  spread = jnp.log(largest / jnp.maximum(jnp.nanmedian(masked, axis=-1), _TINY))
  return _reduce(jnp.where(largest > 0, spread, jnp.nan), reduce)


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


RANK_METHODS = ("svd", "jacobi", "gram64")


def singular_values(x: jax.Array, method: str = "svd") -> jax.Array:
  """Singular values `[..., min(N, D)]` of `x [..., N, D]` by `method`:

    "svd"     XLA's default SVD in float32 (exact to ~1e-7 relative in `effective_rank`).
    "jacobi"  the one-sided Jacobi SVD (`lax.linalg.svd(algorithm=JACOBI)`), batched on GPU
              (cuSOLVER gesvdj); not implemented on CPU.
    "gram64"  `sqrt(eigvalsh(X^T X))` with the Gram matrix and its eigenvalues in float64 (one
              small symmetric eigenproblem per matrix); needs `jax_enable_x64`. A float32 Gram
              loses the small singular values (1e-3 relative error in `effective_rank` on a
              6-decade spectrum, 4e-2 near rank 1), float64 keeps them (< 1e-9).
  """
  if method not in RANK_METHODS:
    raise ValueError(f"method must be one of {RANK_METHODS}, got {method!r}")
  x = _f32(x)
  if x.shape[-2] < x.shape[-1]:  # same singular values; XLA's CPU SVD is far slower on wide inputs
    x = jnp.swapaxes(x, -1, -2)
  if method == "gram64":
    if not jax.config.jax_enable_x64:
      raise ValueError('method="gram64" needs float64: set jax.config.update("jax_enable_x64", '
                       'True) (or JAX_ENABLE_X64=1) before JAX starts')
    x64 = x.astype(jnp.float64)
    eigenvalues = jnp.linalg.eigvalsh(jnp.einsum("...nd,...ne->...de", x64, x64))
    return jnp.sqrt(jnp.maximum(eigenvalues, 0.0))[..., ::-1]
  algorithm = (jax.lax.linalg.SvdAlgorithm.JACOBI if method == "jacobi" else
               jax.lax.linalg.SvdAlgorithm.DEFAULT)
  return jax.lax.linalg.svd(x, full_matrices=False, compute_uv=False, algorithm=algorithm)


def _valid_rows(x: jax.Array, valid: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
  """`x [..., N, D]` as float32 with its invalid rows zeroed, and `valid` as `[..., N, 1]` bools."""
  x = _f32(x)
  if valid is None:
    return x, None
  valid = jnp.asarray(valid, bool)
  if valid.shape != x.shape[:-1]:
    raise ValueError(f"valid: shape {valid.shape} must be x's {x.shape} without its last axis")
  valid = valid[..., None]
  return jnp.where(valid, x, 0.0), valid


def effective_rank(x: jax.Array, reduce: bool = True, *, method: str = "svd",
                   valid: jax.Array | None = None) -> jax.Array:
  """Roy & Vetterli (2007): `exp(-sum p log p)`, `p = sigma / sum(sigma)`, over the singular values
  of the uncentred `x [..., N, D]` (`singular_values(x, method)`); float32 result.

  `valid [..., N]` (optional) keeps only those rows: the rest are zeroed, which adds zero singular
  values only, so a padded sequence reads as its real tokens alone (one program for every length).
  """
  x, _ = _valid_rows(x, valid)
  sigma = singular_values(x, method)
  p = sigma / jnp.maximum(jnp.sum(sigma, axis=-1, keepdims=True), _TINY)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  return _reduce(jnp.exp(entropy).astype(jnp.float32), reduce)


def rank_collapse_residual(x: jax.Array, reduce: bool = True, *,
                           valid: jax.Array | None = None) -> jax.Array:
  """Dong et al. (2021): `||X - 1 mu^T||_F / ||X||_F` with `mu` the token mean of `x [..., N, D]`
  (over the `valid [..., N]` tokens only when given).

  0 when all tokens are identical; 0 for an all-zero `x` (or no valid token).
  """
  x, valid = _valid_rows(x, valid)
  if valid is None:
    centred = x - jnp.mean(x, axis=-2, keepdims=True)
  else:  # mu: NaN without a valid token, never read (every row is then masked)
    centred = jnp.where(valid, x - _masked_mean(x, valid, axis=-2)[..., None, :], 0.0)
  num = jnp.sqrt(jnp.sum(centred * centred, axis=(-2, -1)))
  den = jnp.sqrt(jnp.sum(x * x, axis=(-2, -1)))
  return _reduce(num / jnp.maximum(den, _TINY), reduce)


def massive_activation_ratio(h: jax.Array, reduce: bool = True, *,
                             valid: jax.Array | None = None) -> jax.Array:
  """Sun et al. (2024): `max|h| / median|h|` over the tokens x features of `h [..., N, D]` (over the
  `valid [..., N]` tokens only when given; NaN where none is)."""
  h, valid = _valid_rows(h, valid)
  flat = lambda a: a.reshape(h.shape[:-2] + (-1,))
  magnitude = flat(jnp.abs(h))  # invalid entries are 0: never the max
  median = (jnp.median(magnitude, axis=-1) if valid is None else
            jnp.nanmedian(flat(jnp.where(valid, jnp.abs(h), jnp.nan)), axis=-1))
  ratio = jnp.max(magnitude, axis=-1) / jnp.maximum(median, _TINY)
  return _reduce(ratio, reduce)


def collapse_metrics(routing: Routing, x: jax.Array | None = None, *, prior: Routing | None = None,
                     routed: jax.Array | None = None, eps: float = 0.3,
                     hub_factor: float = 2.0, rank_method: str = "svd") -> dict[str, jax.Array]:
  """All routing metrics (and the representation metrics of what is given) as float32 scalars.

  Args:
    routing: weights `[..., T, S]`.
    x: optional `[..., N, D]` residual stream after the layer: `effective_rank`,
      `rank_collapse_residual`, `massive_activation_ratio`.
    prior: optional content-free routing of the same shape. `sink_excess_prior`,
      `top_source_excess_prior`, `shared_sources` and `hub_excess` are read relative to it;
      without it relative to the uniform routing, so the keys are the same either way.
    routed: optional `[..., N, D]` router output before the residual add: `effective_rank_routed`,
      `rank_collapse_residual_routed`.
    eps: the `sink_rate` threshold.
    hub_factor: the factor of `above_uniform_mass_count` and `shared_sources`.
    rank_method: how the effective ranks get their singular values (`singular_values`).

  `sink_mass`, `sink_excess`, `sink_rate`, `top_source_weight`/`top_source_uniform` and
  `above_uniform_mass_count` are unweighted (their literature definitions); `sink_mass_weighted`,
  the two `*_excess_prior` ratios, `shared_sources` and `hub_excess` weight targets by the
  routing's `row_mass`. Every value is a mean over leading indices except `hub_excess`, the max
  over heads (one sinking head among several must show).
  """
  top, uniform = top_source_weight(routing)
  out = {
      "sink_mass": sink_mass(routing),
      "sink_mass_weighted": sink_mass(routing, weighted=True),
      "sink_excess": sink_excess(routing),
      "sink_excess_prior": sink_excess_prior(routing, prior),
      "sink_rate": sink_rate(routing, eps),
      "top_source_weight": top,
      "top_source_uniform": uniform,
      "top_source_excess_prior": top_source_excess_prior(routing, prior),
      "routing_entropy": routing_entropy(routing),
      "above_uniform_mass_count": above_uniform_mass_count(routing, hub_factor),
      "shared_sources": shared_source_count(routing, prior, hub_factor),
      "hub_excess": hub_excess(routing, prior),
      "key_norm_cv": key_norm_cv(routing),
      "key_norm_log_spread": key_norm_log_spread(routing),
      "norm_mass_correlation": norm_mass_correlation(routing),
  }
  if x is not None:
    out["effective_rank"] = effective_rank(x, method=rank_method)
    out["rank_collapse_residual"] = rank_collapse_residual(x)
    out["massive_activation_ratio"] = massive_activation_ratio(x)
  if routed is not None:
    out["effective_rank_routed"] = effective_rank(routed, method=rank_method)
    out["rank_collapse_residual_routed"] = rank_collapse_residual(routed)
  return out


@jax.jit  # one program per shape when called on host arrays (eagerly it would be ~15)
def onset_step(steps: jax.Array, values: jax.Array, threshold: float,
               rise: float = 0.0) -> jax.Array:
  """First logged step from which `values` stay above their onset level; inf if never, NaN if the
  concentration was there before training.

  The onset level of a run is `max(threshold, values[..., 0] + rise)`: above the threshold and at
  least `rise` above the run's own value at initialisation (the first logged value). A run whose
  first value is already above `threshold` is *pre-existing*: it has no onset (NaN), never an onset
  at step 0.

  Args:
    steps: `[K]` logged step numbers (increasing; `steps[0]` the initialisation).
    values: `[..., K]` a concentration metric at those steps; NaN counts as "not above".
    threshold: the level to cross.
    rise: the least increase over the run's first value.

  Returns:
    float32 `[...]`: `steps[k*]` for the smallest k* >= 1 with `values[k] > level` for all
    k >= k*; inf when there is none; NaN for pre-existing runs.
  """
  values = jnp.asarray(values, jnp.float32)
  first = values[..., :1]
  pre_existing = jnp.nan_to_num(first[..., 0], nan=-jnp.inf) > threshold
  level = jnp.maximum(threshold, jnp.nan_to_num(first, nan=-jnp.inf) + rise)
  above = jnp.nan_to_num(values, nan=-jnp.inf) > level
  above = above.at[..., 0].set(False)
  stays_above = jnp.flip(jnp.cumprod(jnp.flip(above, -1), axis=-1), -1).astype(bool)
  index = jnp.argmax(stays_above, axis=-1)
  steps = jnp.asarray(steps, jnp.float32)
  onset = jnp.where(jnp.any(stays_above, axis=-1), steps[index], jnp.inf)
  return jnp.where(pre_existing, jnp.nan, onset)

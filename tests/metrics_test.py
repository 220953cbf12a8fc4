"""Collapse metrics: hand-built cases and a loop-by-loop NumPy reference on random routings."""

import inspect
import types

from absl.testing import absltest, parameterized
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from rc_jax import routers
from rc_jax.engine import config_lib
from rc_jax.measurement import metrics
from rc_jax.routers import Routing


_ROUTING_KEYS = {
    "sink_mass", "sink_mass_weighted", "sink_excess", "sink_excess_prior", "sink_rate",
    "top_source_weight", "top_source_uniform", "top_source_excess_prior", "routing_entropy",
    "above_uniform_mass_count", "shared_sources", "hub_excess", "key_norm_cv",
    "key_norm_log_spread", "norm_mass_correlation"}
_HIDDEN_KEYS = {"effective_rank", "rank_collapse_residual", "massive_activation_ratio"}
_ROUTED_KEYS = {"effective_rank_routed", "rank_collapse_residual_routed"}


def _jitted(fn):
  """`fn` under jit (eager op-by-op dispatch compiles every primitive per shape: far slower)."""
  static = [name for name in ("reduce", "weighted", "method", "rank_method", "head_axis")
            if name in inspect.signature(fn).parameters]
  return jax.jit(fn, static_argnames=static)


_jm = types.SimpleNamespace(**{name: _jitted(getattr(metrics, name)) for name in (
    "received_mass", "sink_mass", "sink_excess", "sink_excess_prior", "sink_rate",
    "top_source_weight", "top_source_excess_prior", "routing_entropy", "above_uniform_mass_count",
    "shared_source_count", "key_norm_cv", "key_norm_log_spread", "norm_mass_correlation",
    "effective_rank", "rank_collapse_residual", "massive_activation_ratio", "collapse_metrics",
    "onset_step")})
_attention = jax.jit(routers.softmax_attention)


def _causal_uniform(t):
  mask = np.tril(np.ones((t, t), bool))
  return Routing(weights=jnp.asarray(mask / mask.sum(-1, keepdims=True), jnp.float32),
                 mask=jnp.asarray(mask), key_norms=jnp.ones((t,)))


def _random_routing(seed, lead=(2, 3), t=6):
  """Random causal softmax routing with stratified key norms."""
  q, k = jax.random.normal(jax.random.key(seed), (2, *lead, t, 4))
  k = k * jnp.linspace(0.3, 3.0, t)[:, None]
  _, routing = _attention(q, k, k)
  return routing


def _reference(routing):
  """Per-leading-index NumPy reference of every routing metric, written as explicit loops."""
  w = np.asarray(routing.weights, np.float64)
  mask = np.broadcast_to(np.asarray(routing.mask), w.shape)
  norms = np.broadcast_to(np.asarray(routing.key_norms, np.float64), w.shape[:-2] + w.shape[-1:])
  lead = w.shape[:-2]
  out = {name: np.zeros(lead) for name in (
      "sink_mass", "top", "uniform", "entropy", "hubs", "cv", "spread", "corr")}
  for idx in np.ndindex(*lead):
    a, m, kn = w[idx], mask[idx], norms[idx]
    n_t, n_s = a.shape
    alpha = np.array([a[m[:, j], j].mean() for j in range(n_s)])
    share = np.array([np.mean([1 / m[i].sum() for i in range(n_t) if m[i, j]]) for j in range(n_s)])
    out["sink_mass"][idx] = alpha[0]
    out["top"][idx] = np.mean([a[i][m[i]].max() for i in range(n_t)])
    out["uniform"][idx] = np.mean([1 / m[i].sum() for i in range(n_t)])
    ent = []
    for i in range(n_t):
      if m[i].sum() > 1:
        p = a[i][m[i]]
        p = p[p > 0]
        ent.append(-(p * np.log(p)).sum() / np.log(m[i].sum()))
    out["entropy"][idx] = np.mean(ent)
    out["hubs"][idx] = np.sum(alpha > 2 * share)
    out["cv"][idx] = kn.std() / kn.mean()
    out["spread"][idx] = np.log(kn.max() / np.median(kn))
    out["corr"][idx] = np.corrcoef(kn, alpha)[0, 1]
  return out


class MetricsHandBuiltTest(parameterized.TestCase):

  def test_one_hot_to_source_zero_is_a_full_sink(self):
    t = 10
    weights = jnp.zeros((2, t, t)).at[..., 0].set(1.0)
    routing = Routing(weights=weights, mask=jnp.tril(jnp.ones((t, t), bool)),
                      key_norms=jnp.ones((2, t)))
    self.assertEqual(float(_jm.sink_rate(routing)), 1.0)
    self.assertAlmostEqual(float(_jm.sink_mass(routing)), 1.0, places=6)
    np.testing.assert_allclose(_jm.sink_excess(routing), 1.0 / np.mean(1 / np.arange(1, t + 1)),
                               rtol=1e-5)
    self.assertAlmostEqual(float(_jm.routing_entropy(routing)), 0.0, places=6)
    self.assertEqual(float(_jm.above_uniform_mass_count(routing)), 1.0)

  def test_uniform_causal_attention_at_t64(self):
    routing = _causal_uniform(64)
    alpha0 = float(_jm.sink_mass(routing))
    np.testing.assert_allclose(alpha0, np.mean(1 / np.arange(1, 65)), rtol=1e-5)
    self.assertAlmostEqual(alpha0, 0.074, places=3)
    self.assertEqual(float(_jm.sink_rate(routing)), 0.0)
    np.testing.assert_allclose(_jm.sink_excess(routing), 1.0, rtol=1e-5)
    top, baseline = _jm.top_source_weight(routing)
    np.testing.assert_allclose(top, baseline, rtol=1e-6)
    np.testing.assert_allclose(_jm.routing_entropy(routing), 1.0, rtol=1e-5)
    self.assertEqual(float(_jm.above_uniform_mass_count(routing)), 0.0)

  def test_effective_rank(self):
    np.testing.assert_allclose(_jm.effective_rank(jnp.eye(7)), 7.0, rtol=1e-5)
    rank_one = jnp.outer(jnp.arange(1.0, 6.0), jnp.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(_jm.effective_rank(rank_one), 1.0, rtol=1e-4)

  def test_rank_collapse_residual(self):
    identical = jnp.tile(jnp.array([[1.0, 2.0, -3.0]]), (5, 1))
    self.assertAlmostEqual(float(_jm.rank_collapse_residual(identical)), 0.0, places=6)
    self.assertEqual(float(_jm.rank_collapse_residual(jnp.zeros((4, 3)))), 0.0)
    x = jax.random.normal(jax.random.key(0), (6, 3))
    expected = np.linalg.norm(x - x.mean(0)) / np.linalg.norm(x)
    np.testing.assert_allclose(_jm.rank_collapse_residual(x), expected, rtol=1e-5)

  def test_massive_activation_ratio(self):
    h = jnp.ones((4, 5)).at[2, 3].set(100.0)
    np.testing.assert_allclose(_jm.massive_activation_ratio(h), 100.0, rtol=1e-6)

  def test_hidden_metrics_of_padded_rows_equal_the_real_rows_alone(self):
    x = jax.random.normal(jax.random.key(1), (2, 9, 5)).at[0, 3, 2].set(40.0)
    lengths = (6, 2)   # fewer rows than features in the second: the SVD's other orientation
    valid = jnp.arange(9)[None, :] < jnp.array(lengths)[:, None]
    padded = x.at[~valid].set(1e3)   # whatever is in the padding must not count
    for name in ("effective_rank", "rank_collapse_residual", "massive_activation_ratio"):
      fn = getattr(_jm, name)
      got = fn(padded, reduce=False, valid=valid)
      want = [float(fn(x[b, :n])) for b, n in enumerate(lengths)]
      np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=name)
    none = jnp.zeros((1, 9), bool)
    self.assertEqual(float(_jm.rank_collapse_residual(padded[:1], valid=none)), 0.0)
    self.assertTrue(np.isnan(float(_jm.massive_activation_ratio(padded[:1], valid=none))))
    with self.assertRaisesRegex(ValueError, "valid: shape"):
      _jm.effective_rank(x, valid=valid[:, :4])

  def test_norm_mass_correlation_undefined_for_equal_norms(self):
    routing = _random_routing(1)
    equal = routing.replace(key_norms=jnp.ones_like(routing.key_norms))
    self.assertTrue(np.isnan(float(_jm.norm_mass_correlation(equal))))

  def test_key_norm_spread_undefined_without_keys(self):
    routing = _causal_uniform(8).replace(key_norms=jnp.zeros((8,)))
    self.assertTrue(np.isnan(_jm.key_norm_log_spread(routing)))
    self.assertEqual(float(_jm.key_norm_cv(routing)), 0.0)

  def test_masked_sources_are_ignored(self):
    """Padding sources (no target may use them) affect no metric."""
    routing = _random_routing(2, lead=(2,), t=5)
    pad = 3
    t = routing.n_sources
    weights = jnp.pad(routing.weights, ((0, 0), (0, 0), (0, pad)))
    mask = jnp.pad(routing.mask, ((0, 0), (0, pad)))
    norms = jnp.pad(routing.key_norms, ((0, 0), (0, pad)), constant_values=1e3)
    padded = Routing(weights=weights, mask=mask, key_norms=norms)
    got, want = _jm.collapse_metrics(padded), _jm.collapse_metrics(routing)
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    self.assertEqual(padded.n_sources, t + pad)

  def test_reduce_false_keeps_leading_dims(self):
    routing = _random_routing(3, lead=(2, 3))
    self.assertEqual(_jm.sink_rate(routing, reduce=False).shape, (2, 3))
    self.assertEqual(_jm.top_source_weight(routing, reduce=False)[0].shape, (2, 3))
    self.assertEqual(_jm.effective_rank(jnp.ones((2, 3, 5, 4)), reduce=False).shape, (2, 3))

  def test_metrics_do_not_pass_gradients(self):
    def f(k):
      _, routing = routers.softmax_attention(k, k, k)
      return sum(_jm.collapse_metrics(routing, k).values())

    grad = jax.jit(jax.grad(f))(jax.random.normal(jax.random.key(4), (6, 4)))
    np.testing.assert_array_equal(grad, 0.0)

  def test_onset_step(self):
    steps = jnp.array([0, 10, 20, 30, 40])
    values = jnp.array([[0.1, 0.5, 0.2, 0.6, 0.7],      # crosses for good at 30
                        [0.1, 0.2, 0.2, 0.2, 0.2],      # never
                        [0.9, 0.9, 0.9, 0.9, 0.9],      # pre-existing: no onset (NaN)
                        [0.1, 0.9, jnp.nan, 0.9, 0.9],  # NaN breaks the run
                        [0.35, 0.45, 0.5, 0.6, 0.6]])   # above 0.4 from 10, 0.2 above init at 30
    np.testing.assert_array_equal(_jm.onset_step(steps, values, 0.4),
                                  [30, np.inf, np.nan, 30, 10])
    np.testing.assert_array_equal(_jm.onset_step(steps, values, 0.4, rise=0.2),
                                  [30, np.inf, np.nan, 30, 30])


class MetricsReferenceTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_routing_metrics_match_reference(self, seed):
    routing = _random_routing(seed)
    ref = _reference(routing)
    top, uniform = _jm.top_source_weight(routing, reduce=False)
    pairs = {
        "sink_mass": _jm.sink_mass(routing, reduce=False),
        "top": top,
        "uniform": uniform,
        "entropy": _jm.routing_entropy(routing, reduce=False),
        "hubs": _jm.above_uniform_mass_count(routing, reduce=False),
        "cv": _jm.key_norm_cv(routing, reduce=False),
        "spread": _jm.key_norm_log_spread(routing, reduce=False),
        "corr": _jm.norm_mass_correlation(routing, reduce=False),
    }
    for name, got in pairs.items():
      np.testing.assert_allclose(got, ref[name], rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(_jm.sink_rate(routing), np.mean(ref["sink_mass"] > 0.3))

  def test_effective_rank_matches_reference(self):
    x = np.asarray(jax.random.normal(jax.random.key(5), (3, 6, 4)))
    want = []
    for xi in x:
      s = np.linalg.svd(xi, compute_uv=False)
      p = s / s.sum()
      want.append(np.exp(-(p * np.log(p)).sum()))
    np.testing.assert_allclose(_jm.effective_rank(x, reduce=False), want, rtol=1e-5)
    np.testing.assert_allclose(_jm.effective_rank(x), np.mean(want), rtol=1e-5)

  def test_collapse_metrics_bundle(self):
    routing = _random_routing(6)
    x = jax.random.normal(jax.random.key(7), (2, 3, 6, 4))
    bundle = _jm.collapse_metrics(routing, x)
    self.assertEqual(set(bundle), _ROUTING_KEYS | _HIDDEN_KEYS)
    for name, value in bundle.items():
      self.assertEqual(value.shape, (), name)
      self.assertEqual(value.dtype, jnp.float32, name)
      self.assertTrue(np.isfinite(value), name)
    self.assertEqual(set(jax.eval_shape(metrics.collapse_metrics, routing)), _ROUTING_KEYS)
    self.assertEqual(set(config_lib.METRIC_NAMES) - set(bundle) - _ROUTED_KEYS, set())

# --- Mass weighting, positional priors and shared-source hubs ------------------------------------

_T = 32
_CAUSAL = np.tril(np.ones((_T, _T), bool))


def _routing(weights, mask, row_mass=None, key_norms=None):
  weights = jnp.asarray(weights, jnp.float32)
  if key_norms is None:
    key_norms = jnp.ones(weights.shape[:-2] + weights.shape[-1:])
  return Routing(weights=weights, mask=jnp.asarray(mask), key_norms=jnp.asarray(key_norms),
                 row_mass=None if row_mass is None else jnp.asarray(row_mass, jnp.float32))


def _rows_with(t, mask, fixed):
  """Rows giving `fixed[i] = {source: weight}` and the rest of each row uniformly to the others."""
  w = np.zeros(mask.shape)
  for i in range(t):
    chosen = fixed(i)
    others = [j for j in np.flatnonzero(mask[i]) if j not in chosen]
    for j, v in chosen.items():
      w[i, j] = v
    w[i, others] = (1.0 - sum(chosen.values())) / max(len(others), 1)
  return w


def _decay(t, rate):
  lag = np.arange(t)[:, None] - np.arange(t)[None, :]
  w = np.where(lag >= 0, np.exp(-rate * lag), 0.0)
  return w / w.sum(-1, keepdims=True)


def _hand_built(name):
  """T = 32 causal routings of the brief's hand-built hub cases."""
  if name == "self":
    return np.eye(_T)
  if name == "previous":
    return _rows_with(_T, _CAUSAL, lambda i: {max(i - 1, 0): 1.0})
  if name == "uniform":
    return _CAUSAL / _CAUSAL.sum(-1, keepdims=True)
  if name == "sink_0":
    return _rows_with(_T, _CAUSAL, lambda i: {0: 0.6} if i >= 1 else {})
  if name == "sinks_0_and_5":
    return _rows_with(_T, _CAUSAL, lambda i: {0: 0.3, 5: 0.3} if i >= 5 else {})
  if name == "decay":
    return _decay(_T, 0.2)
  raise ValueError(name)


class SharedSourcesHandBuiltTest(parameterized.TestCase):

  @parameterized.parameters(("self", 0, 12), ("previous", 0, 11), ("uniform", 0, 0),
                            ("sink_0", 1, 1), ("sinks_0_and_5", 2, 2), ("decay", 0, 11))
  def test_causal_t32(self, name, shared, above_uniform):
    weights = _hand_built(name)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)
    self.assertTrue(np.all(weights[~_CAUSAL] == 0))
    routing = _routing(weights, _CAUSAL)
    self.assertEqual(float(_jm.shared_source_count(routing)), shared)
    # the renamed old hub count counts locality too (why shared_source_count exists)
    self.assertEqual(float(_jm.above_uniform_mass_count(routing)), above_uniform)

  @parameterized.parameters("self", "sink_0", "decay", "uniform")
  def test_routing_equal_to_prior_gives_no_hub_and_unit_excess(self, name):
    routing = _routing(_hand_built(name), _CAUSAL)
    self.assertEqual(float(_jm.shared_source_count(routing, routing)), 0.0)
    self.assertEqual(float(_jm.sink_excess_prior(routing, routing)), 1.0)
    self.assertEqual(float(_jm.top_source_excess_prior(routing, routing)), 1.0)

  def test_sink_against_a_decay_prior(self):
    """A sink on top of the prior: targets >= 1 give 0.6 to source 0, the rest as the prior does."""
    p = _decay(_T, 0.2)
    a = p.copy()
    a[1:, 1:] *= 0.4 / a[1:, 1:].sum(-1, keepdims=True)
    a[1:, 0] = 0.6
    prior, routing = _routing(p, _CAUSAL), _routing(a, _CAUSAL)
    self.assertEqual(float(_jm.shared_source_count(routing, prior)), 1.0)
    # spreading uniformly over far sources over-weights them against a decay prior
    uniform_rest = _routing(_hand_built("sink_0"), _CAUSAL)
    self.assertGreater(float(_jm.shared_source_count(uniform_rest, prior)), 1.0)
    np.testing.assert_allclose(_jm.sink_excess_prior(routing, prior), a[:, 0].sum() / p[:, 0].sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(_jm.top_source_excess_prior(routing, prior),
                               a.max(-1).sum() / p.max(-1).sum(), rtol=1e-5)
    # a decay routing read against the uniform null looks concentrated
    decay = _routing(_decay(_T, 0.2), _CAUSAL)
    self.assertGreater(float(_jm.top_source_excess_prior(decay, None)), 1.5)

  def test_graph_like_full_coverage(self):
    """Symmetric mask covering every node (e.g. K hops span the graph), self-loops included."""
    n = 12
    mask = np.ones((n, n), bool)
    hub = _routing(_rows_with(n, mask, lambda i: {3: 0.6}), mask)
    self.assertEqual(float(_jm.shared_source_count(hub)), 1.0)
    self.assertEqual(float(_jm.shared_source_count(_routing(np.eye(n), mask))), 0.0)
    self.assertEqual(float(_jm.shared_source_count(_routing(mask / n, mask))), 0.0)

  def test_graph_like_sparse_ring(self):
    """Ring of 16 nodes, 2-hop neighbourhoods (5 sources each): a local hub is shared by 5 of 16
    targets, below the default `min_users = 0.5`; `min_users = 0` counts it, and still not self or
    neighbour routing."""
    n = 16
    hops = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    mask = np.minimum(hops, n - hops) <= 2
    local_hub = _routing(_rows_with(n, mask, lambda i: {0: 0.6} if mask[i, 0] else {}), mask)
    self.assertEqual(float(_jm.shared_source_count(local_hub)), 0.0)
    self.assertEqual(float(_jm.shared_source_count(local_hub, min_users=0.0)), 1.0)
    for fixed in (lambda i: {i: 1.0}, lambda i: {(i + 1) % n: 1.0}, lambda i: {}):
      routing = _routing(_rows_with(n, mask, fixed), mask)
      self.assertEqual(float(_jm.shared_source_count(routing, min_users=0.0)), 0.0)

  def test_depth_like_single_target(self):
    """One target over S = 6 earlier layers: the count is the number of sources it over-weights."""
    rows = np.array([[0.7] + [0.06] * 5,
                     [1 / 6] * 6,
                     [0.35, 0.35] + [0.075] * 4,
                     [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])[:, None, :]
    mask = np.ones((1, 6), bool)
    routing = _routing(rows, mask)
    np.testing.assert_array_equal(_jm.shared_source_count(routing, reduce=False), [1, 0, 2, 1])
    np.testing.assert_array_equal(_jm.shared_source_count(routing, routing, reduce=False), 0)
    np.testing.assert_allclose(_jm.top_source_excess_prior(routing, None, reduce=False),
                               [4.2, 1.0, 2.1, 6.0], rtol=1e-5)
    one_source = _routing(np.ones((1, 1)), np.ones((1, 1), bool))  # first layer: no choice
    self.assertTrue(np.isnan(float(_jm.shared_source_count(one_source))))

  def test_bad_arguments(self):
    routing = _routing(_hand_built("uniform"), _CAUSAL)
    with self.assertRaisesRegex(ValueError, "prior"):
      metrics.sink_excess_prior(routing, _routing(np.eye(8), np.eye(8, dtype=bool)))
    with self.assertRaisesRegex(ValueError, "min_share"):
      metrics.shared_source_count(routing, min_share=1.5)
    with self.assertRaisesRegex(ValueError, "row_mass"):
      metrics.sink_mass(routing.replace(row_mass=jnp.ones(5)), weighted=True)


class MassWeightingTest(parameterized.TestCase):

  def _dormant(self, scale=1.0):
    """T = 8 causal: targets 0-2 uniform and active (m = scale); 3-7 dormant (m = 0), all on 0."""
    t = 8
    mask = np.tril(np.ones((t, t), bool))
    weights = mask / mask.sum(-1, keepdims=True)
    weights[3:] = 0.0
    weights[3:, 0] = 1.0
    row_mass = np.where(np.arange(t) < 3, scale, 0.0)
    return _routing(weights, mask, row_mass), mask

  def test_dormant_rows_do_not_count(self):
    routing, _ = self._dormant()
    np.testing.assert_allclose(_jm.sink_mass(routing), (1 + 1 / 2 + 1 / 3 + 5) / 8, rtol=1e-6)
    np.testing.assert_allclose(_jm.sink_mass(routing, weighted=True), (1 + 1 / 2 + 1 / 3) / 3,
                               rtol=1e-6)
    np.testing.assert_allclose(_jm.sink_excess(routing, weighted=True), 1.0, rtol=1e-6)
    self.assertEqual(float(_jm.sink_excess_prior(routing, None)), 1.0)
    self.assertEqual(float(_jm.top_source_excess_prior(routing, None)), 1.0)
    # unweighted, 5 of 7 choice targets give source 0 everything; weighted only targets 1, 2 vote
    self.assertEqual(float(_jm.shared_source_count(routing, weighted=False)), 1.0)
    self.assertEqual(float(_jm.shared_source_count(routing)), 0.0)
    self.assertEqual(float(_jm.above_uniform_mass_count(routing, weighted=True)), 0.0)
    alpha = _jm.received_mass(routing, weighted=True)
    np.testing.assert_allclose(alpha[:3], [(1 + 1 / 2 + 1 / 3) / 3, (1 / 2 + 1 / 3) / 2, 1 / 3],
                               rtol=1e-6)
    self.assertTrue(np.all(np.isnan(alpha[3:])))  # only dormant targets may use sources 3..7

  def test_weighting_is_scale_free_and_trivial_without_row_mass(self):
    routing, _ = self._dormant()
    scaled, _ = self._dormant(scale=1e3)
    for fn in (lambda r: _jm.received_mass(r, weighted=True),
               lambda r: _jm.sink_excess_prior(r, None),
               lambda r: _jm.top_source_weight(r, weighted=True)[0]):
      np.testing.assert_allclose(fn(scaled), fn(routing), rtol=1e-6)
    plain = routing.replace(row_mass=None)
    np.testing.assert_array_equal(_jm.received_mass(plain, weighted=True),
                                  _jm.received_mass(plain))

  def test_prior_row_mass_is_not_used(self):
    routing, _ = self._dormant()
    prior = routing.replace(row_mass=jnp.linspace(0.0, 5.0, 8))
    self.assertEqual(float(_jm.sink_excess_prior(routing, prior)), 1.0)
    self.assertEqual(float(_jm.top_source_excess_prior(routing, prior)), 1.0)


def _masked_softmax_np(logits, mask):
  row_max = np.max(np.where(mask, logits, -1e30), -1, keepdims=True)
  e = np.exp(np.where(mask, logits - row_max, -np.inf))
  total = e.sum(-1, keepdims=True)
  return e / np.where(total > 0, total, 1.0)


def _random_case(kind, seed):
  """Random routing, prior (with its own, to-be-ignored row mass) on a causal, graph-like or
  depth-like mask; leading dims (2, 3); some dormant rows and one fully dormant index."""
  rng = np.random.default_rng(seed)
  lead = (2, 3)
  if kind == "causal":
    t = s = 10
    mask = np.broadcast_to(np.tril(np.ones((t, s), bool)), lead + (t, s))
    distance = np.arange(t)[:, None] - np.arange(s)[None, :]
  elif kind == "graph":
    t = s = 9
    adj = rng.random(lead + (t, s)) < 0.3
    mask = adj | np.swapaxes(adj, -1, -2) | np.eye(t, dtype=bool)
    mask[..., t - 1, :] = mask[..., :, t - 1] = False          # a padding node
    mask[..., t - 2, :] = mask[..., :, t - 2] = False          # an isolated node, self-loop only
    mask[..., t - 2, t - 2] = True
    distance = rng.integers(0, 3, lead + (t, s))
  elif kind == "depth":
    t, s = 1, 5
    mask = np.ones(lead + (t, s), bool)
    mask[1, :, :, 4] = False                                  # fewer earlier layers
    distance = (s - 1 - np.arange(s))[None, :]
  else:
    raise ValueError(kind)
  logits = 1.5 * rng.normal(size=lead + (t, s))
  for idx in np.ndindex(*lead):                                # a couple of shared sinks per index
    logits[idx][:, rng.choice(s, 2, replace=False)] += 2.5
  weights = _masked_softmax_np(logits, mask).astype(np.float32)
  rate = rng.uniform(0.0, 1.0, lead + (1, 1))
  prior_weights = _masked_softmax_np(-rate * distance, mask).astype(np.float32)
  row_mass = rng.uniform(0.0, 2.0, lead + (t,)).astype(np.float32)
  row_mass[rng.random(row_mass.shape) < 0.25] = 0.0
  row_mass[0, 0] = 0.0                                         # all dormant: weighted is undefined
  key_norms = rng.uniform(0.5, 2.0, lead + (s,)).astype(np.float32)
  routing = Routing(weights=jnp.asarray(weights), mask=jnp.asarray(mask),
                    key_norms=jnp.asarray(key_norms), row_mass=jnp.asarray(row_mass))
  prior = Routing(weights=jnp.asarray(prior_weights), mask=jnp.asarray(mask),
                  key_norms=jnp.asarray(key_norms), row_mass=jnp.asarray(row_mass[::-1]))
  return routing, prior


def _ratio_np(num, den):
  return num / den if den > 0 else np.nan


def _reference_weighted(routing, prior, factor=2.0, min_share=0.5, min_users=0.5):
  """Per-leading-index loops over targets and sources (float64) of the weighted and prior _jm."""
  a_all = np.asarray(routing.weights, np.float64)
  mask_all = np.broadcast_to(np.asarray(routing.mask), a_all.shape)
  lead, (n_t, n_s) = a_all.shape[:-2], a_all.shape[-2:]
  mass_all = np.broadcast_to(np.asarray(routing.row_mass, np.float64), lead + (n_t,))
  names = ("sink_mass_weighted", "sink_excess", "sink_excess_prior", "sink_excess_uniform",
           "top_w", "top_uniform_w", "top_excess_prior", "top_excess_uniform", "shared_prior",
           "shared_uniform", "shared_unweighted", "above_w", "above")
  out = {name: np.zeros(lead) for name in names}
  out["alpha_w"] = np.zeros(lead + (n_s,))
  for idx in np.ndindex(*lead):
    a, mask, m = a_all[idx], mask_all[idx], mass_all[idx]
    p_prior = np.asarray(prior.weights, np.float64)[idx]
    size = [mask[i].sum() for i in range(n_t)]
    p_uniform = np.array([[1.0 / size[i] if mask[i, j] else 0.0 for j in range(n_s)]
                          for i in range(n_t)])

    def alpha(j, w, values):
      users = [i for i in range(n_t) if mask[i, j]]
      return _ratio_np(sum(w[i] * values[i, j] for i in users), sum(w[i] for i in users))

    ones = np.ones(n_t)
    alphas_w = [alpha(j, m, a) for j in range(n_s)]
    out["alpha_w"][idx] = alphas_w
    out["sink_mass_weighted"][idx] = alphas_w[0]
    out["sink_excess"][idx] = _ratio_np(alpha(0, ones, a), alpha(0, ones, p_uniform))
    for suffix, p in (("prior", p_prior), ("uniform", p_uniform)):
      out[f"sink_excess_{suffix}"][idx] = _ratio_np(alpha(0, m, a), alpha(0, m, p))
      rows = [i for i in range(n_t) if size[i] > 0]
      out[f"top_excess_{suffix}"][idx] = _ratio_np(sum(m[i] * a[i].max() for i in rows),
                                                   sum(m[i] * p[i].max() for i in rows))
    rows = [i for i in range(n_t) if size[i] > 0]
    out["top_w"][idx] = _ratio_np(sum(m[i] * a[i].max() for i in rows), sum(m[i] for i in rows))
    out["top_uniform_w"][idx] = _ratio_np(sum(m[i] / size[i] for i in rows),
                                          sum(m[i] for i in rows))
    for name, p, w in (("shared_prior", p_prior, m), ("shared_uniform", p_uniform, m),
                       ("shared_unweighted", p_uniform, ones)):
      choice = [i for i in range(n_t) if size[i] >= 2]
      if not choice or sum(w[i] for i in choice) <= 0:
        out[name][idx] = np.nan
        continue
      count = 0
      for j in range(n_s):
        users = [i for i in choice if mask[i, j]]
        votes = sum(w[i] for i in users)
        if not users or len(users) < min_users * len(choice) or votes <= 0:
          continue
        over = sum(w[i] for i in users if a[i, j] > factor * p[i, j])
        count += over / votes > min_share
      out[name][idx] = count
    for name, w in (("above_w", m), ("above", ones)):
      out[name][idx] = sum(
          1 for j in range(n_s)
          if not np.isnan(alpha(j, w, a)) and alpha(j, w, a) > factor * alpha(j, w, p_uniform))
  return out


@jax.jit
def _per_index(routing, prior):
  top_w, top_uniform_w = _jm.top_source_weight(routing, reduce=False, weighted=True)
  return {
      "alpha_w": _jm.received_mass(routing, weighted=True),
      "sink_mass_weighted": _jm.sink_mass(routing, reduce=False, weighted=True),
      "sink_excess": _jm.sink_excess(routing, reduce=False),
      "sink_excess_prior": _jm.sink_excess_prior(routing, prior, reduce=False),
      "sink_excess_uniform": _jm.sink_excess_prior(routing, None, reduce=False),
      "top_w": top_w,
      "top_uniform_w": top_uniform_w,
      "top_excess_prior": _jm.top_source_excess_prior(routing, prior, reduce=False),
      "top_excess_uniform": _jm.top_source_excess_prior(routing, None, reduce=False),
      "shared_prior": _jm.shared_source_count(routing, prior, reduce=False),
      "shared_uniform": _jm.shared_source_count(routing, reduce=False),
      "shared_unweighted": _jm.shared_source_count(routing, reduce=False, weighted=False),
      "above_w": _jm.above_uniform_mass_count(routing, reduce=False, weighted=True),
      "above": _jm.above_uniform_mass_count(routing, reduce=False),
  }


class WeightedPriorReferenceTest(parameterized.TestCase):

  @parameterized.product(kind=("causal", "graph", "depth"), seed=(0, 1))
  def test_matches_reference(self, kind, seed):
    routing, prior = _random_case(kind, seed)
    got, want = _per_index(routing, prior), _reference_weighted(routing, prior)
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6,
                                 err_msg=f"{kind} {name}")
    self.assertTrue(np.isnan(want["sink_mass_weighted"][0, 0]))  # the fully dormant index
    self.assertGreater(np.nanmax(want["shared_uniform"]), 0)     # the cases have hubs to count
    reduced = _jm.sink_excess_prior(routing, prior)
    np.testing.assert_allclose(reduced, np.nanmean(want["sink_excess_prior"]), rtol=2e-5)

  @parameterized.parameters(("causal", 1.5, 0.3, 0.0), ("graph", 3.0, 0.7, 0.2))
  def test_shared_sources_options_match_reference(self, kind, factor, min_share, min_users):
    routing, prior = _random_case(kind, 7)
    want = _reference_weighted(routing, prior, factor, min_share, min_users)
    got = _jm.shared_source_count(routing, prior, factor, min_share, min_users, reduce=False)
    np.testing.assert_array_equal(got, want["shared_prior"])


class SingularValueMethodsTest(parameterized.TestCase):
  """Effective rank within 1e-5 relative of a float64 SVD on the hard cases, for every method this
  backend implements ("jacobi" is GPU/TPU only: benchmarks/gpu_check.sh measures it there)."""

  @staticmethod
  def _cases():
    rng = np.random.default_rng(0)
    n, d = 96, 48
    rank1 = rng.normal(size=(n, 1)) @ rng.normal(size=(1, d))
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return {"near rank 1": rank1 + 1e-3 * rng.normal(size=(n, d)),
            "6-decade spectrum": (u * np.logspace(0, -6, d)) @ v.T,
            "gaussian": rng.normal(size=(n, d))}

  @staticmethod
  def _reference(x):
    s = np.linalg.svd(np.asarray(x, np.float32).astype(np.float64), compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))

  @parameterized.parameters("svd", "gram64")
  def test_accuracy_on_hard_cases(self, method):
    for name, x in self._cases().items():
      with jax.enable_x64(method == "gram64"):
        got = float(_jm.effective_rank(jnp.asarray(x, jnp.float32), method=method))
      self.assertLess(abs(got - self._reference(x)) / self._reference(x), 1e-5, (method, name))

  def test_methods_fail_clearly_where_unavailable(self):
    x = jnp.ones((4, 3))
    with self.assertRaisesRegex(ValueError, "jax_enable_x64"):
      _jm.effective_rank(x, method="gram64")
    with self.assertRaisesRegex(ValueError, "method must be one of"):
      _jm.effective_rank(x, method="qr")


class CollapseMetricsWithPriorTest(parameterized.TestCase):

  def test_untrained_like_routing_equal_to_prior(self):
    """Every value finite, the prior-relative ratios exactly 1 and no shared source."""
    rng = np.random.default_rng(0)
    t, heads = 12, 3
    weights = np.stack([_decay(t, rate) for rate in (0.05, 0.3, 1.0)])
    routing = _routing(weights, np.tril(np.ones((t, t), bool)),
                       row_mass=rng.uniform(0.5, 2.0, (heads, t)),
                       key_norms=rng.uniform(0.5, 2.0, (heads, t)))
    x, routed = jax.random.normal(jax.random.key(8), (2, heads, t, 4))
    prior = routing.replace(row_mass=routing.row_mass * 3.0)
    bundle = _jm.collapse_metrics(routing, x, prior=prior, routed=routed)
    self.assertEqual(set(bundle), _ROUTING_KEYS | _HIDDEN_KEYS | _ROUTED_KEYS)
    for name, value in bundle.items():
      self.assertEqual(value.shape, (), name)
      self.assertTrue(np.isfinite(value), name)
    self.assertEqual(float(bundle["sink_excess_prior"]), 1.0)
    self.assertEqual(float(bundle["top_source_excess_prior"]), 1.0)
    self.assertEqual(float(bundle["shared_sources"]), 0.0)
    self.assertEqual(float(bundle["hub_excess"]), 0.0)
    np.testing.assert_allclose(bundle["effective_rank_routed"], _jm.effective_rank(routed),
                               rtol=1e-6)
    np.testing.assert_allclose(bundle["rank_collapse_residual_routed"],
                               _jm.rank_collapse_residual(routed), rtol=1e-6)

  def test_without_prior_the_keys_fall_back_to_the_uniform_null(self):
    routing, _ = _random_case("causal", 3)
    bundle = _jm.collapse_metrics(routing)
    np.testing.assert_allclose(bundle["sink_excess_prior"],
                               _jm.sink_excess(routing, weighted=True), rtol=1e-5)
    top, uniform = _jm.top_source_weight(routing, reduce=False, weighted=True)
    np.testing.assert_allclose(bundle["top_source_excess_prior"], np.nanmean(top / uniform),
                               rtol=1e-5)
    self.assertEqual(float(bundle["shared_sources"]),
                     float(_jm.shared_source_count(routing, None, 2.0)))

  def test_vmapped_over_runs_matches_each_run(self):
    routing, prior = _random_case("graph", 4)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), routing, prior)
    priors = jax.tree.map(lambda *leaves: jnp.stack(leaves), prior, routing)
    got = jax.jit(jax.vmap(lambda r, p: _jm.collapse_metrics(r, prior=p)))(stacked, priors)
    for run, (r, p) in enumerate(((routing, prior), (prior, routing))):
      want = _jm.collapse_metrics(r, prior=p)
      for name in want:
        np.testing.assert_allclose(got[name][run], want[name], rtol=1e-5, err_msg=name)

  def test_no_intermediate_larger_than_the_weights(self):
    """Metrics run in every training block: nothing of size T^2 * S (or larger) per index."""
    routing, prior = _random_case("causal", 5)
    jaxpr = jax.make_jaxpr(lambda r, p: _jm.collapse_metrics(r, prior=p))(routing, prior)

    def sizes(jaxpr):
      for eqn in jaxpr.eqns:
        for var in eqn.outvars:
          yield int(np.prod(var.aval.shape))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
          yield from sizes(sub)

    self.assertLessEqual(max(sizes(jaxpr.jaxpr)), routing.weights.size)


if __name__ == "__main__":
  absltest.main()

"""Collapse metrics: hand-built cases and a loop-by-loop NumPy reference on random routings."""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax import metrics, routers
from rc_jax.routers import Routing


def _causal_uniform(t):
  mask = np.tril(np.ones((t, t), bool))
  return Routing(weights=jnp.asarray(mask / mask.sum(-1, keepdims=True), jnp.float32),
                 mask=jnp.asarray(mask), key_norms=jnp.ones((t,)))


def _random_routing(seed, lead=(2, 3), t=6):
  """Random causal softmax routing with stratified key norms."""
  q, k = jax.random.normal(jax.random.key(seed), (2, *lead, t, 4))
  k = k * jnp.linspace(0.3, 3.0, t)[:, None]
  _, routing = routers.softmax_attention(q, k, k)
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
    routing = Routing(weights=weights, mask=jnp.tril(jnp.ones((t, t), bool)), key_norms=jnp.ones((2, t)))
    self.assertEqual(float(metrics.sink_rate(routing)), 1.0)
    self.assertAlmostEqual(float(metrics.sink_mass(routing)), 1.0, places=6)
    np.testing.assert_allclose(metrics.sink_excess(routing), 1.0 / np.mean(1 / np.arange(1, t + 1)),
                               rtol=1e-5)
    self.assertAlmostEqual(float(metrics.routing_entropy(routing)), 0.0, places=6)
    self.assertEqual(float(metrics.hub_count(routing)), 1.0)

  def test_uniform_causal_attention_at_t64(self):
    routing = _causal_uniform(64)
    alpha0 = float(metrics.sink_mass(routing))
    np.testing.assert_allclose(alpha0, np.mean(1 / np.arange(1, 65)), rtol=1e-5)
    self.assertAlmostEqual(alpha0, 0.074, places=3)
    self.assertEqual(float(metrics.sink_rate(routing)), 0.0)
    np.testing.assert_allclose(metrics.sink_excess(routing), 1.0, rtol=1e-5)
    top, baseline = metrics.top_source_weight(routing)
    np.testing.assert_allclose(top, baseline, rtol=1e-6)
    np.testing.assert_allclose(metrics.routing_entropy(routing), 1.0, rtol=1e-5)
    self.assertEqual(float(metrics.hub_count(routing)), 0.0)

  def test_effective_rank(self):
    np.testing.assert_allclose(metrics.effective_rank(jnp.eye(7)), 7.0, rtol=1e-5)
    rank_one = jnp.outer(jnp.arange(1.0, 6.0), jnp.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(metrics.effective_rank(rank_one), 1.0, rtol=1e-4)

  def test_rank_collapse_residual(self):
    identical = jnp.tile(jnp.array([[1.0, 2.0, -3.0]]), (5, 1))
    self.assertAlmostEqual(float(metrics.rank_collapse_residual(identical)), 0.0, places=6)
    self.assertEqual(float(metrics.rank_collapse_residual(jnp.zeros((4, 3)))), 0.0)
    x = jax.random.normal(jax.random.key(0), (6, 3))
    expected = np.linalg.norm(x - x.mean(0)) / np.linalg.norm(x)
    np.testing.assert_allclose(metrics.rank_collapse_residual(x), expected, rtol=1e-5)

  def test_massive_activation_ratio(self):
    h = jnp.ones((4, 5)).at[2, 3].set(100.0)
    np.testing.assert_allclose(metrics.massive_activation_ratio(h), 100.0, rtol=1e-6)

  def test_norm_mass_correlation_undefined_for_equal_norms(self):
    routing = _random_routing(1)
    equal = routing.replace(key_norms=jnp.ones_like(routing.key_norms))
    self.assertTrue(np.isnan(float(metrics.norm_mass_correlation(equal))))

  def test_masked_sources_are_ignored(self):
    """Padding sources (no target may use them) affect no metric."""
    routing = _random_routing(2, lead=(2,), t=5)
    pad = 3
    t = routing.n_sources
    weights = jnp.pad(routing.weights, ((0, 0), (0, 0), (0, pad)))
    mask = jnp.pad(routing.mask, ((0, 0), (0, pad)))
    norms = jnp.pad(routing.key_norms, ((0, 0), (0, pad)), constant_values=1e3)
    padded = Routing(weights=weights, mask=mask, key_norms=norms)
    got, want = metrics.collapse_metrics(padded), metrics.collapse_metrics(routing)
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    self.assertEqual(padded.n_sources, t + pad)

  def test_reduce_false_keeps_leading_dims(self):
    routing = _random_routing(3, lead=(2, 3))
    self.assertEqual(metrics.sink_rate(routing, reduce=False).shape, (2, 3))
    self.assertEqual(metrics.top_source_weight(routing, reduce=False)[0].shape, (2, 3))
    self.assertEqual(metrics.effective_rank(jnp.ones((2, 3, 5, 4)), reduce=False).shape, (2, 3))

  def test_metrics_do_not_pass_gradients(self):
    def f(k):
      _, routing = routers.softmax_attention(k, k, k)
      return sum(metrics.collapse_metrics(routing, k).values())

    grad = jax.grad(f)(jax.random.normal(jax.random.key(4), (6, 4)))
    np.testing.assert_array_equal(grad, 0.0)

  def test_onset_step(self):
    steps = jnp.array([0, 10, 20, 30, 40])
    values = jnp.array([[0.1, 0.5, 0.2, 0.6, 0.7],      # crosses for good at 30
                        [0.1, 0.2, 0.2, 0.2, 0.2],      # never
                        [0.9, 0.9, 0.9, 0.9, 0.9],      # from the start
                        [0.1, 0.9, jnp.nan, 0.9, 0.9]])  # NaN breaks the run
    np.testing.assert_array_equal(metrics.onset_step(steps, values, 0.4), [30, np.inf, 0, 30])


class MetricsReferenceTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 2)
  def test_routing_metrics_match_reference(self, seed):
    routing = _random_routing(seed)
    ref = _reference(routing)
    top, uniform = metrics.top_source_weight(routing, reduce=False)
    pairs = {
        "sink_mass": metrics.sink_mass(routing, reduce=False),
        "top": top,
        "uniform": uniform,
        "entropy": metrics.routing_entropy(routing, reduce=False),
        "hubs": metrics.hub_count(routing, reduce=False),
        "cv": metrics.key_norm_cv(routing, reduce=False),
        "spread": metrics.key_norm_log_spread(routing, reduce=False),
        "corr": metrics.norm_mass_correlation(routing, reduce=False),
    }
    for name, got in pairs.items():
      np.testing.assert_allclose(got, ref[name], rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(metrics.sink_rate(routing), np.mean(ref["sink_mass"] > 0.3))

  def test_effective_rank_matches_reference(self):
    x = np.asarray(jax.random.normal(jax.random.key(5), (3, 6, 4)))
    want = []
    for xi in x:
      s = np.linalg.svd(xi, compute_uv=False)
      p = s / s.sum()
      want.append(np.exp(-(p * np.log(p)).sum()))
    np.testing.assert_allclose(metrics.effective_rank(x, reduce=False), want, rtol=1e-5)
    np.testing.assert_allclose(metrics.effective_rank(x), np.mean(want), rtol=1e-5)

  def test_collapse_metrics_bundle(self):
    routing = _random_routing(6)
    x = jax.random.normal(jax.random.key(7), (2, 3, 6, 4))
    bundle = jax.jit(metrics.collapse_metrics)(routing, x)
    self.assertEqual(set(bundle), {
        "sink_mass", "sink_excess", "sink_rate", "top_source_weight", "top_source_uniform", "routing_entropy",
        "hub_count", "key_norm_cv", "key_norm_log_spread", "norm_mass_correlation",
        "effective_rank", "rank_collapse_residual", "massive_activation_ratio"})
    for name, value in bundle.items():
      self.assertEqual(value.shape, (), name)
      self.assertEqual(value.dtype, jnp.float32, name)
      self.assertTrue(np.isfinite(value), name)


if __name__ == "__main__":
  absltest.main()

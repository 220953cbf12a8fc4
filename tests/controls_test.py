"""The instrument's positive and negative controls: planted routings through the report's statistic,
nulls, margins and calibrated thresholds (`configs/report.py`), in every family's routing shape."""

from absl.testing import absltest, parameterized
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.measurement import metrics, stats
from rc_jax.report import controls, suite
from rc_jax.routers.routing import Routing

_CFG = suite.load_report_config()


def _causal_softmax(logits):
  t = logits.shape[-1]
  logits = np.where(np.tril(np.ones((t, t), bool)), logits, -np.inf)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@jax.jit
def _statistic(weights, prior):
  t = weights.shape[-1]
  mask = jnp.tril(jnp.ones((t, t), bool))
  norms = jnp.ones(weights.shape[:-1])
  return getattr(metrics, _CFG.concentration.metric)(Routing(weights, mask, norms),
                                                     Routing(prior, mask, norms))


def _read(weights, prior=None):
  """The report's concentration statistic of `weights [..., T, T]` (causal; prior: uniform)."""
  weights = np.asarray(weights, np.float32)
  if prior is None:
    t = weights.shape[-1]
    prior = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
  return float(_statistic(weights, np.broadcast_to(np.asarray(prior, np.float32),
                                                   weights.shape)))


class BatteryTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.rows = controls.battery(_CFG)

  def test_every_control_reads_as_expected(self):
    failed = [f"{r['family']} {r['component']} {r['case']}: expected {r['expected']}, got "
              f"{r['obtained']} ({r['values']}; {r['nulls']})" for r in self.rows if not r["passed"]]
    self.assertEqual(failed, [])

  def test_every_family_and_component_has_yes_and_no_cases(self):
    for family in controls.FAMILIES:
      for component in ("concentration", "collapse", "stratification"):
        expected = {r["expected"] for r in self.rows
                    if r["family"] == family and r["component"] == component}
        self.assertEqual(expected, {stats.YES, stats.NO}, (family, component))


  def test_onset_rule_sees_planted_delays_and_not_an_unresolved_one(self):
    rows = [r for r in self.rows if r["component"] == "onset delay (claim 2)"]
    self.assertEqual({r["expected"] for r in rows}, {stats.YES, stats.NO})
    unresolved = next(r for r in rows if "inside the first log interval" in r["case"])
    self.assertIn(": inconclusive (every run's onset is at step 200", unresolved["nulls"])


class PlantedOtherShapesTest(parameterized.TestCase):
  """Shapes, positions, head counts and masses the battery does not use, against the common
  threshold of `configs/report.py` (the largest family threshold)."""

  @parameterized.product(t=(16, 48), heads=(2, 6), mass=(0.35, 0.6), source=(0, 2))
  def test_one_sinking_head_is_above_the_threshold(self, t, heads, mass, source):
    rng = np.random.default_rng(t + heads)
    base = _causal_softmax(rng.normal(0, 0.8, (1, heads, t, t)))
    sunk = base.copy()
    rows = np.arange(t) >= max(source, 1)
    sunk[0, heads - 1, rows] *= 1 - mass
    sunk[0, heads - 1, rows, source] += mass
    self.assertGreater(_read(sunk), _CFG.concentration.threshold)

  @parameterized.parameters(16, 32, 64)
  def test_content_free_routings_are_below_the_threshold(self, t):
    rng = np.random.default_rng(t)
    lag = np.subtract.outer(np.arange(t), np.arange(t)).astype(float)
    previous = np.eye(t, k=-1)
    previous[0, 0] = 1.0
    decay = _causal_softmax(-0.7 * lag)
    for weights, prior in ((np.broadcast_to(np.eye(t), (1, 4, t, t)), None),
                           (np.broadcast_to(previous, (1, 4, t, t)), None),
                           (np.broadcast_to(decay, (1, 4, t, t)), decay),
                           (np.broadcast_to(decay, (1, 4, t, t)), None)):
      self.assertLess(_read(weights, prior), _CFG.concentration.threshold)
    for brake in (0.0, 0.5, 1.0, 2.0):
      tilt = _causal_softmax(rng.normal(0, 0.9, (2, 4, t, t)) - brake * lag)
      self.assertLess(_read(tilt, _causal_softmax(-brake * lag)),
                      min(_CFG.concentration.thresholds.values()))

  def test_does_not_grow_with_a_content_free_brake(self):
    t = 32
    lag = np.subtract.outer(np.arange(t), np.arange(t)).astype(float)
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 0.3, (8, 4, 1, t)) + rng.normal(0, 0.8, (8, 4, t, t))
    readings = [np.mean([_read(_causal_softmax(logits[s:s + 1] - b * lag)[0][None],
                               _causal_softmax(-b * lag)) for s in range(8)])
                for b in (0.0, 0.5, 1.0, 2.0)]
    self.assertEqual(readings, sorted(readings, reverse=True))


if __name__ == "__main__":
  absltest.main()

"""The report's statistics, verdict rules and writer, on hand-built values (no training)."""

import importlib.util
import math
import os
import tempfile

from absl.testing import absltest, parameterized
import numpy as np

from rc_jax.report import claims, stats, suite, writer


def _report_config():
  spec = importlib.util.spec_from_file_location("report_cfg",
                                                os.path.join(suite.CONFIG_DIR, "report.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


class CompareTest(parameterized.TestCase):

  def test_clear_increase_is_yes(self):
    r = stats.compare([1.0, 1.1, 0.9], [0.0, 0.05, -0.05], direction=1, margin=0.25)
    self.assertEqual(r["outcome"], stats.YES)
    self.assertAlmostEqual(r["effect"], 1.0)
    # sd of the paired differences is 0.05 (1.0, 1.05, 0.95): bound = 2.920 * 0.05 / sqrt(3)
    self.assertAlmostEqual(r["bound"], 2.920 * 0.05 / math.sqrt(3))

  def test_no_change_is_no(self):
    r = stats.compare([0.1, 0.11, 0.09], [0.1, 0.1, 0.1], direction=1, margin=0.25)
    self.assertEqual(r["outcome"], stats.NO)

  def test_wrong_direction_is_no(self):
    r = stats.compare([0.0, 0.0, 0.0], [1.0, 1.1, 0.9], direction=1, margin=0.25)
    self.assertEqual(r["outcome"], stats.NO)

  def test_large_spread_is_inconclusive(self):
    r = stats.compare([2.0, -1.0, 0.5], [0.0, 0.0, 0.0], direction=1, margin=0.25)
    self.assertEqual(r["outcome"], stats.INCONCLUSIVE)

  def test_relative_decrease(self):
    r = stats.compare([8.0, 8.1, 7.9], [10.0, 10.0, 10.0], direction=-1, margin=0.1,
                      relative=True)
    self.assertAlmostEqual(r["effect"], 0.2)
    self.assertEqual(r["outcome"], stats.YES)

  def test_undefined_values_dropped(self):
    r = stats.compare([1.0, None, float("nan")], [0.0, 0.0, 0.0], direction=1, margin=0.1)
    self.assertEqual(r["n"], 1)
    self.assertEqual(r["outcome"], stats.INCONCLUSIVE)

  def test_all_of(self):
    self.assertEqual(stats.all_of([stats.YES, stats.YES]), stats.YES)
    self.assertEqual(stats.all_of([stats.YES, stats.INCONCLUSIVE]), stats.INCONCLUSIVE)
    self.assertEqual(stats.all_of([stats.INCONCLUSIVE, stats.NO]), stats.NO)
    self.assertEqual(stats.all_of([]), stats.INCONCLUSIVE)


class OnsetTest(parameterized.TestCase):

  @parameterized.parameters(
      ([100, 200, 300], 200), ([100, None, None], math.inf), ([100, 200, None], 200),
      ([100, 300, None, None], math.inf), ([100, 300, 500, None], 400))
  def test_censored_median(self, onsets, expected):
    self.assertEqual(stats.onset_median(onsets, 1000), expected)

  def test_progression_early_late_never(self):
    result = stats.onset_progression([0.0, 0.1, 1.0], [[50, 50, 100], [300, 400, None],
                                                      [None, None, None]], 1000)
    self.assertEqual(result["outcome"], stats.YES)
    self.assertEqual(result["medians"], [50, 400, math.inf])

  def test_progression_brake_without_effect(self):
    result = stats.onset_progression([0.0, 0.5], [[50, 50], [50, 50]], 1000)
    self.assertEqual(result["outcome"], stats.NO)

  def test_no_onset_is_inconclusive(self):
    result = stats.onset_progression([0.0, 0.5], [[None, None], [None, None]], 1000)
    self.assertEqual(result["outcome"], stats.INCONCLUSIVE)

  def test_reduce_layers_direction(self):
    values = np.array([[1.0, 3.0, np.nan], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(stats.reduce_layers("shared_sources", values), [3.0, np.nan])
    np.testing.assert_array_equal(stats.reduce_layers("effective_rank_routed", values),
                                  [1.0, np.nan])


def _fake_values(concentrates: bool, seed_offset: float = 0.0) -> dict:
  """One sweep's values: 3 seeds x brakes (0, 1); the trained model concentrates if asked."""
  runs, final, init, shuffled = [], {}, {}, {}
  metrics = ("shared_sources", "effective_rank_routed", "key_norm_cv", "top_source_weight",
             "top_source_uniform", "loss")
  for name in metrics:
    final[name], init[name], shuffled[name] = [], [], []
  for seed in range(3):
    for brake in (0.0, 1.0):
      onset = (50.0 + 10 * seed) if brake == 0 and concentrates else None
      runs.append({"run": len(runs), "seed": seed, "brake": brake, "learning_rate": 3e-3,
                   "onset_step": onset, "exploratory_onset_step": None})
      wiggle = 0.01 * seed + seed_offset
      strong = concentrates and brake == 0
      final["shared_sources"].append((1.0 if strong else 0.0) + wiggle)
      final["effective_rank_routed"].append((5.0 if strong else 10.0) + wiggle)
      final["key_norm_cv"].append((0.5 if strong else 0.2) + wiggle)
      final["top_source_weight"].append(0.6)
      final["top_source_uniform"].append(0.25)
      final["loss"].append(1.0)
      for table in (init, shuffled):
        table["shared_sources"].append(0.0 + wiggle)
        table["effective_rank_routed"].append(10.0 + wiggle)
        table["key_norm_cv"].append(0.2 + wiggle)
        table["top_source_weight"].append(0.3)
        table["top_source_uniform"].append(0.25)
        table["loss"].append(3.0)
  return {"fingerprint": "x", "budget": 1000,
          "onset": {"metric": "shared_sources", "threshold": 0.25, "layer_reduce": "max"},
          "exploratory_onset": {"metric": "sink_excess_prior", "threshold": 1.5,
                                "layer_reduce": "max"},
          "runs": runs, "final": final, "init": init, "shuffled": shuffled}


class ClaimsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cfg = _report_config()
    self.values = {}
    for sweep in suite.all_sweeps():
      routed = "prior" not in sweep.variants
      self.values[sweep.name] = _fake_values(concentrates=routed)

  def test_everything_concentrates(self):
    evaluated = {c["title"][0]: c for c in claims.evaluate(self.values, self.cfg)}
    self.assertEqual(evaluated["1"]["verdict"], "reproduced")
    self.assertEqual(evaluated["2"]["verdict"], "reproduced")
    exploratory = [r for r in evaluated["2"]["rows"] if r.get("exploratory")]
    self.assertLen(exploratory, len(suite.trained_sweeps()))   # reported, outside the verdict
    self.assertTrue(all(r["outcome"] == stats.INCONCLUSIVE for r in exploratory))
    # the selective and frozen SSM concentrate alike here: the freeze removes nothing
    self.assertEqual(evaluated["3"]["verdict"], "not reproduced")
    self.assertEqual(evaluated["4"]["verdict"], "reproduced")
    self.assertEqual(evaluated["5"]["verdict"], "reproduced")   # the routing account fits
    self.assertEqual(evaluated["6"]["verdict"], "not reproduced")   # distance changes nothing

  def test_prior_router_that_concentrates_too_defeats_claim_1(self):
    self.values["attention-prior-brake0"] = _fake_values(concentrates=True)
    evaluated = claims.evaluate(self.values, self.cfg)
    self.assertEqual(evaluated[0]["verdict"], "not reproduced")
    failing = [r for r in evaluated[0]["rows"] if r["subject"] == "attention"
               and r["what"] == "all three components"]
    self.assertEqual(failing[0]["outcome"], stats.NO)

  def test_normalisation_account_wins_when_controls_do_not_concentrate(self):
    for name in ("attention-sigmoid-brake0", "rwkv", "ssm", "ssm-noescape-brake0"):
      self.values[name] = _fake_values(concentrates=False)
    competing = claims.evaluate(self.values, self.cfg)[4]
    self.assertEqual(competing["verdict"], "not reproduced")

  def test_a_sweep_not_run_reads_inconclusive(self):
    del self.values["ssm-frozen-brake0"]
    causal = claims.evaluate(self.values, self.cfg)[2]
    self.assertEqual(causal["rows"][0]["outcome"], stats.INCONCLUSIVE)
    self.assertEqual(causal["verdict"], "inconclusive")

  def test_writer(self):
    evaluated = claims.evaluate(self.values, self.cfg)
    with tempfile.TemporaryDirectory() as tmp:
      commands = {s.name: (s.command("tiny", tmp), os.path.join(tmp, s.name))
                  for s in suite.all_sweeps()}
      path = writer.write_report(tmp, "tiny", self.values, evaluated, self.cfg, commands,
                                 "python experiments/report.py --preset=tiny")
      text = open(path).read()
      for claim in evaluated:
        self.assertIn(claim["title"], text)
      self.assertIn("configs/attention.py:tiny,recall", text)
      for name in ("signature.png", "onset_vs_brake.png"):
        self.assertGreater(os.path.getsize(os.path.join(tmp, "figures", name)), 1000)
      with open(os.path.join(tmp, "tables", "claims.csv")) as f:
        self.assertGreater(len(f.readlines()), 20)


if __name__ == "__main__":
  absltest.main()

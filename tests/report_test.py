"""The report's statistics, verdict rules and writer, on hand-built values (no training)."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized
import numpy as np
import pytest

from rc_jax.measurement import stats
from rc_jax.report import claims, suite, writer

_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


class CompareTest(parameterized.TestCase):

  def test_clear_increase_is_yes(self):
    r = stats.compare([1.0, 1.1, 0.9], [0.0, 0.05, -0.05], direction=1, margin=0.25)
    self.assertEqual(r["outcome"], stats.YES)
    self.assertAlmostEqual(r["effect"], 1.0)
    # sd of the paired differences is 0.05 (1.0, 1.05, 0.95): bound = t_{0.95, 2} 0.05 / sqrt(3)
    self.assertAlmostEqual(r["bound"], 2.919986 * 0.05 / math.sqrt(3), places=6)

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

  def test_floored_relative_effect_on_a_null_near_zero(self):
    r = stats.compare([0.04, 0.041, 0.039], [5e-6, 6e-6, 4e-6], direction=1, margin=0.25,
                      relative=True, floor=0.2)
    self.assertAlmostEqual(r["effect"], 0.2, places=4)   # 0.04 / 0.2, not 0.04 / 5e-6
    self.assertEqual(r["outcome"], stats.NO)

  def test_minimum_detectable_effect(self):
    # noncentral t: at n = 8, 95% one-sided, 80% power the MDE is about 0.97 sd (2.5 sd at n = 3)
    self.assertAlmostEqual(stats.minimum_detectable_effect(1.0, 8), 0.97, delta=0.02)
    self.assertGreater(stats.minimum_detectable_effect(1.0, 3), 2.0)
    self.assertEqual(stats.minimum_detectable_effect(0.0, 8), 0.0)
    self.assertTrue(math.isnan(stats.minimum_detectable_effect(1.0, 1)))
    r = stats.compare([1.0, 1.2, 0.8, 1.1], [0.0] * 4, direction=1, margin=0.1)
    self.assertAlmostEqual(r["mde"], stats.minimum_detectable_effect(np.std([1.0, 1.2, 0.8, 1.1],
                                                                            ddof=1), 4))

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

  def test_trend_later_onsets_at_larger_brakes(self):
    brakes = [0.0] * 4 + [0.1] * 4 + [1.0] * 4
    onsets = [50, 60, 50, 70, 300, 400, None, 350, None, None, None, 900]
    status = ["onset" if o is not None else "censored" for o in onsets]
    result = stats.onset_trend(brakes, onsets, status, 1000)
    self.assertEqual(result["outcome"], stats.YES)
    self.assertGreater(result["tau"], 0.5)
    self.assertEqual(result["medians"][:2], [55.0, 375.0])
    self.assertTrue(math.isinf(result["medians"][2]))

  def test_trend_brake_without_effect_is_no(self):
    brakes = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    onsets = [100, 50, 100, 50, 50, 40]
    result = stats.onset_trend(brakes, onsets, ["onset"] * 6, 1000)
    self.assertEqual(result["outcome"], stats.NO)

  def test_trend_with_every_onset_at_one_logged_step_is_inconclusive(self):
    brakes = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    result = stats.onset_trend(brakes, [200] * 6, ["onset"] * 6, 8000, first_logged=200)
    self.assertEqual(result["outcome"], stats.INCONCLUSIVE)
    self.assertIn("inside one log interval", result["reason"])
    self.assertEqual((result["n_at_first_logged"], result["n_onsets"]), (6, 6))
    # the same onsets but the largest brake's last run censored: that is a delay the test sees
    result = stats.onset_trend(brakes, [200] * 5 + [None], ["onset"] * 5 + ["censored"], 8000,
                               first_logged=200)
    self.assertEqual(result["n_at_first_logged"], 5)
    self.assertGreater(result["tau"], 0)

  def test_trend_over_one_brake_is_inconclusive(self):
    result = stats.onset_trend([0.0, 0.0], [100, 300], ["onset"] * 2, 1000)
    self.assertEqual(result["outcome"], stats.INCONCLUSIVE)

  def test_trend_without_any_onset_is_inconclusive(self):
    result = stats.onset_trend([0.0, 0.5], [None, None], ["censored"] * 2, 1000)
    self.assertEqual(result["outcome"], stats.INCONCLUSIVE)

  def test_pre_existing_and_diverged_runs_are_left_out(self):
    brakes = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    onsets = [None, 10, 20, None, None, 30]
    status = ["pre-existing", "onset", "onset", "early", "censored", "onset"]
    result = stats.onset_trend(brakes, onsets, status, 100)
    self.assertEqual((result["n_pre_existing"], result["n_early"]), (1, 1))
    self.assertEqual(result["fractions"], [1.0, 0.5])

  def test_reduce_layers_direction(self):
    values = np.array([[1.0, 3.0, np.nan], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(stats.signature_reduce("shared_sources", values), [3.0, np.nan])
    np.testing.assert_array_equal(stats.signature_reduce("effective_rank_routed", values),
                                  [1.0, np.nan])


_METRICS = ("hub_excess", "effective_rank_routed", "key_norm_cv", "top_source_weight",
            "top_source_uniform", "shared_sources", "sink_rate")


def _fake_values(concentrates: bool, seed_offset: float = 0.0) -> dict:
  """One sweep's values (`collect.sweep_values` layout): 8 seeds x brakes (0, 1), 2 layers; the
  trained model concentrates (at brake 0, from step 100 on) if asked."""
  steps = [0, 100, 200, 300]
  runs, series = [], []
  final, init, shuffled = ({name: [] for name in _METRICS + ("loss",)} for _ in range(3))
  for seed in range(8):
    for brake in (0.0, 1.0):
      runs.append({"run": len(runs), "seed": seed, "brake": brake, "learning_rate": 3e-3,
                   "status": "ok"})
      wiggle = 0.003 * seed + seed_offset
      strong = concentrates and brake == 0
      series.append([0.02 + wiggle] + [(0.5 if strong else 0.03) + wiggle] * 3)
      trained = {"hub_excess": 0.5 if strong else 0.03, "effective_rank_routed": 5.0 if strong
                 else 10.0, "key_norm_cv": 0.5 if strong else 0.2, "top_source_weight": 0.6,
                 "top_source_uniform": 0.25, "shared_sources": 1.0, "sink_rate": 0.5}
      untrained = {"hub_excess": 0.02, "effective_rank_routed": 10.0, "key_norm_cv": 0.2,
                   "top_source_weight": 0.3, "top_source_uniform": 0.25, "shared_sources": 0.0,
                   "sink_rate": 0.0}
      for table, source in ((final, trained), (init, untrained), (shuffled, trained)):
        for name in _METRICS:
          table[name].append([source[name] + wiggle, source[name] / 2])
        table["loss"].append(1.0)
  return {"version": 2, "fingerprint": "x", "series_metric": "hub_excess", "series_reduce": "max",
          "budget": steps[-1], "steps": steps, "runs": runs, "series": series, "final": final,
          "init": init, "shuffled": shuffled}


class ClaimsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.cfg = suite.load_report_config()
    self.values = {}
    for sweep in suite.all_sweeps():
      routed = "prior" not in sweep.variants
      self.values[sweep.name] = _fake_values(concentrates=routed)

  def test_everything_concentrates(self):
    evaluated = {c["title"][0]: c for c in claims.evaluate(self.values, self.cfg)}
    self.assertEqual(evaluated["1"]["verdict"], "reproduced")
    self.assertEqual(evaluated["2"]["verdict"], "reproduced")
    # the selective and frozen SSM concentrate alike here: the freeze removes nothing
    self.assertEqual(evaluated["3"]["verdict"], "not reproduced")
    self.assertEqual(evaluated["4"]["verdict"], "reproduced")
    self.assertEqual(evaluated["5"]["verdict"], "reproduced")   # the routing account fits
    self.assertEqual(evaluated["6"]["verdict"], "not reproduced")   # distance changes nothing

  def test_components_read_only_their_nulls(self):
    rows = claims.evaluate(self.values, self.cfg)[0]["rows"]
    by = {(r["subject"], r["what"].split(":")[0]): r for r in rows if "per_null" in r}
    self.assertEqual(set(by["attention", "concentration"]["per_null"]), {"init", "prior"})
    self.assertEqual(set(by["attention", "collapse"]["per_null"]), {"init"})
    self.assertEqual(set(by["attention", "stratification"]["per_null"]), {"init", "prior"})
    self.assertEqual(set(by["ssm", "stratification"]["per_null"]), {"init"})   # equal prior keys
    self.assertEqual(set(by["rwkv", "stratification"]["per_null"]), {"init"})  # k = 0
    self.assertEqual(set(by["depth", "stratification"]["per_null"]), {"init"})
    self.assertIn("shuffled", by["attention", "concentration"]["descriptive"])

  def test_a_shuffled_probe_that_keeps_the_sink_does_not_defeat_it(self):
    verdict = claims.evaluate(self.values, self.cfg)[0]["verdict"]
    self.assertEqual(verdict, "reproduced")   # shuffled == trained in the fake values

  def test_prior_router_that_concentrates_too_defeats_claim_1(self):
    self.values["attention-prior-brake0"] = _fake_values(concentrates=True)
    evaluated = claims.evaluate(self.values, self.cfg)
    self.assertEqual(evaluated[0]["verdict"], "not reproduced")
    failing = [r for r in evaluated[0]["rows"] if r["subject"] == "attention"
               and r["what"] == "all three components"]
    self.assertEqual(failing[0]["outcome"], stats.NO)

  def test_onsets_use_the_calibrated_threshold_and_pre_existing_runs(self):
    values = _fake_values(concentrates=True)
    steps, status = claims.onset_status(values, 0.1, 0.05)
    self.assertEqual(status[:2], ["onset", "censored"])   # brake 0 crosses at 100, brake 1 never
    self.assertEqual(steps[0], 100.0)
    values["series"][0][0] = 0.3                          # above 0.1 before training
    _, status = claims.onset_status(values, 0.1, 0.05)
    self.assertEqual(status[0], "pre-existing")

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
    control_rows = [{"family": "attention", "component": "concentration", "case": "planted",
                     "expected": "yes", "obtained": "yes", "passed": True, "values": "0.3",
                     "threshold": "0.157", "nulls": ""}]
    with tempfile.TemporaryDirectory() as tmp:
      commands = {s.name: (s.command("tiny", tmp), os.path.join(tmp, s.name))
                  for s in suite.all_sweeps()}
      environments = {"attention": {"devices": 1, "device_kind": "NVIDIA H200", "jax": "0.11.2"},
                      "graph": None}  # an older summary records no environment
      for name, environment in environments.items():
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(tmp, name, "summary.json"), "w") as f:
          json.dump({"environment": environment} if environment else {}, f)
      path = writer.write_report(tmp, "tiny", self.values, evaluated, self.cfg, commands,
                                 "python experiments/report.py --preset=tiny", control_rows)
      text = open(path).read()
      for claim in evaluated:
        self.assertIn(claim["title"], text)
      for section in ("## Can the instrument see it?", "## Calibration of the onset thresholds",
                      "## What changed after v1, and why", "REPORT_v1.md"):
        self.assertIn(section, text)
      self.assertLess(text.index("Can the instrument see it?"), text.index("## 1. Every family"))
      self.assertIn("configs/attention.py:tiny,recall", text)
      self.assertIn("sweeps trained on 1 x NVIDIA H200 with JAX 0.11.2 (1); a machine its "
                    "summary does not record (1)", text)
      # a sweep stopped before its values were collected is not one of the report's sweeps
      self.assertEqual(writer._trained_on(commands, {"graph": {}}),  # pylint: disable=protected-access
                       "sweeps trained on a machine its summary does not record (1)")
      for name in ("signature.png", "onset_vs_brake.png"):
        self.assertGreater(os.path.getsize(os.path.join(tmp, "figures", name)), 1000)
      with open(os.path.join(tmp, "tables", "claims.csv")) as f:
        self.assertGreater(len(f.readlines()), 20)
      with open(os.path.join(tmp, "tables", "controls.csv")) as f:
        self.assertEqual(len(f.readlines()), 2)



@pytest.mark.slow
class ReportLauncherTest(absltest.TestCase):
  """experiments/report.py end to end on two tiny sweeps: train, collect, then the report alone."""

  def test_tiny_sweeps_then_reuse_only(self):
    root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_REPO, os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, os.path.join(_REPO, "experiments", "report.py"), "--preset=tiny",
            f"--workdir={root}/report"]
    trained = subprocess.run(base + ["--only=attention,attention-prior-brake0"], env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(trained.returncode, 0, trained.stderr[-3000:])
    self.assertFalse(os.path.exists(os.path.join(root, "report", "REPORT.md")))
    report = subprocess.run(base + ["--reuse_only", f"--publish={root}/published"], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    self.assertEqual(report.returncode, 0, report.stderr[-3000:])
    self.assertIn("controls:", report.stdout)
    text = open(os.path.join(root, "published", "REPORT.md")).read()
    self.assertIn("## Can the instrument see it?", text)
    self.assertIn("| attention | concentration: hub_excess |", text)
    self.assertIn("sweep not run", text)   # every other sweep reads inconclusive
    with open(os.path.join(root, "report", "attention", "report_values.json")) as f:
      values = json.load(f)
    self.assertEqual(len(values["runs"]), 4)   # tiny: 2 seeds x 2 brakes
    self.assertEqual(len(values["series"][0]), len(values["steps"]))


if __name__ == "__main__":
  absltest.main()

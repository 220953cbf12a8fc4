"""Kaplan-Meier estimator and median onset against hand-computed cases and a loop reference."""

import math

from absl.testing import absltest, parameterized
import numpy as np

from rc_jax.measurement import onsets


def _reference_survival(times, observed, t):
  """S(t) by the product-limit definition, one event time at a time (plain loops)."""
  survival = 1.0
  for u in sorted({x for x, seen in zip(times, observed) if seen}):
    if u > t:
      break
    deaths = sum(1 for x, seen in zip(times, observed) if seen and x == u)
    at_risk = sum(1 for x in times if x >= u)
    survival *= 1 - deaths / at_risk
  return survival


class KaplanMeierTest(parameterized.TestCase):

  def test_no_censoring(self):
    km = onsets.kaplan_meier([40, 10, 30, 20], [True] * 4)
    np.testing.assert_array_equal(km.step, [10, 20, 30, 40])
    np.testing.assert_allclose(km.survival, [0.75, 0.5, 0.25, 0.0])
    np.testing.assert_array_equal(km.at_risk, [4, 3, 2, 1])
    np.testing.assert_array_equal(km.events, [1, 1, 1, 1])
    self.assertEqual((km.n, km.end), (4, 40.0))

  def test_ties_count_censored_runs_at_risk_at_their_time(self):
    # t=10: 2 onsets of 5 at risk -> 3/5; t=30: 1 onset of 2 at risk (the run censored at 30
    # too) -> 3/5 * 1/2; the run censored at 20 leaves before 30.
    km = onsets.kaplan_meier([10, 10, 20, 30, 30], [True, True, False, True, False])
    np.testing.assert_array_equal(km.step, [10, 30])
    np.testing.assert_array_equal(km.events, [2, 1])
    np.testing.assert_array_equal(km.at_risk, [5, 2])
    np.testing.assert_allclose(km.survival, [0.6, 0.3])
    self.assertEqual(onsets.median(km), onsets.Median(30.0, True, None, "30"))

  def test_all_censored(self):
    km = onsets.kaplan_meier([40, 40, 20], [False] * 3)
    self.assertEqual(km.step.size, 0)
    self.assertEqual(km.at(100), 1.0)
    self.assertEqual(onsets.median(km), onsets.Median(None, False, 40.0, "> 40"))

  def test_censoring_before_an_event(self):
    km = onsets.kaplan_meier([2, 3, 5, 8], [True, False, True, True])
    np.testing.assert_allclose(km.survival, [0.75, 0.375, 0.0])
    np.testing.assert_array_equal(km.at_risk, [4, 2, 1])
    self.assertEqual(km.at(4), 0.75)
    self.assertEqual(km.at(1), 1.0)
    self.assertEqual(onsets.median(km).value, 5.0)

  @parameterized.named_parameters(
      ("odd_uncensored_is_the_median", [5, 1, 3], [1, 1, 1], 3.0),
      ("even_uncensored_is_the_midpoint", [10, 40, 20, 30], [1, 1, 1, 1], 25.0),
      ("two_seeds_both_collapse", [850, 1000], [1, 1], 925.0),
      ("one_run", [7], [1], 7.0),
      ("censored_after_the_median", [10, 20, 30, 100], [1, 1, 1, 0], 25.0),
  )
  def test_reached_median(self, times, observed, expected):
    med = onsets.median(onsets.kaplan_meier(times, np.asarray(observed, bool)))
    self.assertEqual((med.value, med.reached, med.bound, med.text),
                     (expected, True, None, f"{expected:g}"))

  @parameterized.named_parameters(
      # fewer than half collapse: S stays above 1/2 up to the end of follow-up
      ("fewer_than_half", [10, 40, 40], [1, 0, 0], 40.0),
      # exactly half, the rest censored at the budget: the plateau at 1/2 ends beyond 1000
      ("half_then_plateau", [600, 1000], [1, 0], 800.0),
      ("one_run_censored", [1000], [0], 1000.0),
  )
  def test_not_reached_median_is_a_lower_bound(self, times, observed, bound):
    med = onsets.median(onsets.kaplan_meier(times, np.asarray(observed, bool)))
    self.assertEqual((med.value, med.reached, med.bound, med.text),
                     (None, False, bound, f"> {bound:g}"))

  def test_matches_a_loop_reference_on_random_censored_data(self):
    rng = np.random.default_rng(0)
    for _ in range(20):
      n = int(rng.integers(1, 12))
      times = rng.integers(0, 6, n) * 10.0  # many ties
      observed = rng.random(n) < 0.6
      km = onsets.kaplan_meier(times, observed)
      for t in range(-5, 60, 5):
        self.assertAlmostEqual(km.at(t), _reference_survival(times, observed, t))
      med = onsets.median(km)
      below = [t for t in range(0, 60, 10) if _reference_survival(times, observed, t) < 0.5]
      if med.reached and not any(math.isclose(s, 0.5) for s in km.survival):
        self.assertEqual(med.value, below[0])
      if not below:
        self.assertFalse(med.reached)

  def test_to_dict_is_plain_lists(self):
    km = onsets.kaplan_meier([1, 2], [True, False])
    self.assertEqual(km.to_dict(), {"step": [1.0], "survival": [0.5], "at_risk": [2],
                                    "events": [1]})

  def test_bad_input_raises(self):
    with self.assertRaisesRegex(ValueError, "at least one run"):
      onsets.kaplan_meier([], [])
    with self.assertRaisesRegex(ValueError, "observed"):
      onsets.kaplan_meier([1, 2], [True])
    with self.assertRaisesRegex(ValueError, "finite"):
      onsets.kaplan_meier([1, math.inf], [True, False])


class CensoredTimesTest(absltest.TestCase):

  def test_onset_or_last_finite_step(self):
    steps = [0, 10, 20, 30]
    series = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, np.nan, np.nan], [np.nan] * 4,
                       [0, np.inf, 1, np.nan]])
    onset = np.array([10, np.inf, np.inf, np.inf, np.inf])
    time, observed = onsets.censored_times(steps, series, onset)
    np.testing.assert_array_equal(time, [10, 30, 10, 0, 20])
    np.testing.assert_array_equal(observed, [True, False, False, False, False])


if __name__ == "__main__":
  absltest.main()

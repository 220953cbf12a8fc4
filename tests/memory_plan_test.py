"""The memory plan: the peak model, the budget, and the choice `auto` makes on real programs."""

import os
import tempfile

from absl.testing import absltest
import jax
import pytest

from rc_jax.engine import config_lib, memory_plan, sweep
from rc_jax.engine.memory_plan import Footprint, PerRun

GIB = 2**30


class _Device:
  def __init__(self, stats):
    self._stats = stats

  def memory_stats(self):
    return self._stats


class PeakModelTest(absltest.TestCase):

  def test_fit_separates_fixed_state_and_temporaries(self):
    one = Footprint(argument=100, output=100, alias=90, temp=1000)  # peak 1110
    two = Footprint(argument=200, output=200, alias=180, temp=1900)  # peak 2120
    self.assertEqual(one.peak, 1110)
    per_run = PerRun.fit(one, two)
    self.assertEqual(per_run, PerRun(fixed=100, state=110, temp=900))
    self.assertEqual(per_run.peak(1, 1), one.peak)
    self.assertEqual(per_run.peak(2, 2), two.peak)
    self.assertEqual(per_run.peak(8, 8), 100 + 8 * 110 + 8 * 900)
    self.assertEqual(per_run.peak(8, 2), 100 + 2 * 8 * 110 + 2 * 900)  # map: states twice

  def test_largest_group_is_balanced_and_fits(self):
    per_run = PerRun(fixed=100, state=110, temp=900)
    states = 2 * 8 * 110
    budget = 100 + states + 5 * 900  # room for 5 -> 2 groups are needed -> 2 groups of 4
    self.assertEqual(per_run.largest_group(8, budget), 4)
    self.assertEqual(per_run.largest_group(8, 100 + states + 3 * 900), 3)  # 3 groups: 3, 3, 2
    self.assertEqual(per_run.largest_group(8, per_run.peak(8, 8)), 8)
    self.assertEqual(memory_plan.balanced_group(64, 20), 16)  # 4 groups of 16, not 20+20+20+4
    self.assertEqual(per_run.largest_group(8, 100 + states + 899), 0)
    for budget in range(1000, 9000, 250):
      group = per_run.largest_group(8, budget)
      if group:
        self.assertLessEqual(per_run.peak(8, group), budget)

  def test_budget_sources(self):
    cpu = _Device(None)
    self.assertEqual(memory_plan.budget_bytes([cpu], 0.0)[0], 8 * GIB)
    self.assertEqual(memory_plan.budget_bytes([cpu], 2.5), (int(2.5 * GIB),
                                                           "execution.memory_budget_gib=2.5"))
    gpu = _Device({"bytes_limit": 4 * GIB})
    small = _Device({"bytes_limit": 3 * GIB})
    self.assertEqual(memory_plan.budget_bytes([gpu, small], 0.0), (3 * GIB, "device bytes_limit"))
    self.assertEqual(memory_plan.budget_bytes([gpu], 2.0)[0], 2 * GIB)
    self.assertEqual(memory_plan.budget_bytes([gpu], 16.0)[0], 4 * GIB)  # capped by the device

  def test_budget_must_be_a_non_negative_number(self):
    config = config_lib.base_config("attention", "tiny")
    config.execution.memory_budget_gib = -1.0
    with self.assertRaisesRegex(ValueError, "execution.memory_budget_gib"):
      config_lib.validate(config)


@pytest.mark.slow
class ChooseTest(absltest.TestCase):
  """On the tiny attention chunk with one layer (a third less compilation than two; the plan reads
  only the compiled footprints), 4 runs on one device (compiled, never run)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = config_lib.base_config("attention", "tiny")
    cls.config.model.depth = 1
    cls.devices = jax.devices()[:1]
    # the programs run_sweep uses for this config (its refusal below reuses these compilations)
    cls.programs = sweep.builders_for(sweep.trainer_for(cls.config), tuple(cls.devices))
    build, compile_chunk = cls.programs.build, cls.programs.compile_chunk
    cls.footprints = {runs: Footprint.of(compile_chunk(build("vmap", runs), runs))
                      for runs in (1, 2, 4)}

  def _choose(self, budget):
    return memory_plan.choose(self.programs.build, self.programs.compile_chunk, 4, budget, "test")

  def test_line_through_one_and_two_predicts_four(self):
    per_run = PerRun.fit(self.footprints[1], self.footprints[2])
    self.assertGreater(per_run.temp, 0)
    self.assertGreater(per_run.state, 0)
    actual = self.footprints[4].peak
    self.assertLess(abs(per_run.peak(4, 4) - actual) / actual, 0.15)

  def test_everything_fits_is_vmap(self):
    plan = self._choose(self.footprints[4].peak)
    self.assertEqual((plan.mode, plan.group), ("vmap", 4))
    self.assertEqual(plan.peak, self.footprints[4].peak)
    self.assertIsNone(plan.per_run)

  def test_too_little_for_all_is_map_with_a_fitting_group(self):
    budget = self.footprints[4].peak - 1
    plan = self._choose(budget)
    self.assertEqual(plan.mode, "map")
    self.assertIn(plan.group, (1, 2, 3))
    self.assertLessEqual(plan.peak, budget)
    compiled = self.programs.compile_chunk(plan.program, 4)
    self.assertEqual(Footprint.of(compiled).peak, plan.peak)
    self.assertIn("execution 'map'", plan.describe())

  def test_cpu_cache_limit_splits_a_group_that_fits_in_memory(self):
    cache = self.footprints[4].temp // 2  # two runs' temporaries
    plan = memory_plan.choose(self.programs.build, self.programs.compile_chunk, 4, 8 * GIB, "test",
                              cache_bytes=cache)
    self.assertEqual((plan.mode, plan.group), ("map", 2))
    self.assertIn("CPU", plan.reason)
    self.assertIs(plan.program.init, self.programs.build("vmap", 4).init)  # init stays vmapped
    self.assertIs(plan.program.chunk, self.programs.build("map", 2).chunk)
    everything = memory_plan.choose(self.programs.build, self.programs.compile_chunk, 4, 8 * GIB,
                                    "test", cache_bytes=self.footprints[4].temp)
    self.assertEqual(everything.mode, "vmap")

  def test_one_run_too_big_is_refused_before_anything_is_written(self):
    config = self.config.copy_and_resolve_references()  # run_sweep reuses the class's programs
    config.execution.memory_budget_gib = self.footprints[1].peak / 2 / GIB
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "never")
      with self.assertRaisesRegex(memory_plan.MemoryBudgetError, "does not fit"):
        sweep.run_sweep(config, workdir, devices=self.devices)
      self.assertFalse(os.path.exists(workdir))


if __name__ == "__main__":
  absltest.main()

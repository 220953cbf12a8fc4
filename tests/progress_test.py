"""Sweep progress lines: digest numbers, compiling lines, rate and ETA, visibility and silencing."""

import io
import logging

from absl.testing import absltest
import numpy as np

from rc_jax.engine import progress

_ONSET = {"metric": "sink_excess", "threshold": 1.5, "layer_reduce": "max"}


def _runs(seeds, brakes, lrs=(3e-3,)):
  return [dict(run=i, seed=s, learning_rate=lr, brake=b)
          for i, (s, lr, b) in enumerate((s, lr, b) for s in seeds for lr in lrs for b in brakes)]


class DigestTest(absltest.TestCase):

  def test_min_median_max_over_seeds_per_brake(self):
    runs = _runs(seeds=(0, 1, 2), brakes=(0.0, 0.5))  # run r: seed r // 2, brake r % 2
    loss = np.array([[9.0, 1.0], [9.0, 4.0], [9.0, 2.0], [9.0, 5.0], [9.0, 3.0], [9.0, 6.0]])
    excess = np.zeros((6, 2, 2))
    excess[:, -1, 1] = [1.0, 2.0, 1.6, 0.5, 3.0, 0.7]   # layer 1 is the max over layers
    lines = progress.digest(runs, {"loss": loss, "sink_excess": excess}, _ONSET)
    self.assertLen(lines, 3)
    self.assertIn("sink_excess(max) min/med/max", lines[0])
    # brake 0: runs 0, 2, 4 -> losses 1, 2, 3; excess 1.0, 1.6, 3.0 (2 above 1.5)
    self.assertEqual(lines[1].split(), ["brake=0", "1/2/3", "1/1.6/3", "2/3"])
    # brake 0.5: runs 1, 3, 5 -> losses 4, 5, 6; excess 2.0, 0.5, 0.7 (1 above 1.5)
    self.assertEqual(lines[2].split(), ["brake=0.5", "4/5/6", "0.5/0.7/2", "1/3"])

  def test_non_finite_losses_are_counted_not_summarised(self):
    runs = _runs(seeds=(0, 1, 2), brakes=(0.0,))
    logs = {"loss": np.array([[1.0], [np.nan], [3.0]]), "sink_excess": np.ones((3, 1, 2))}
    row = progress.digest(runs, logs, _ONSET)[1]
    self.assertIn("1/2/3 (1 non-finite)", row)

  def test_learning_rate_shown_only_when_swept_and_rows_capped(self):
    runs = _runs(seeds=(0,), brakes=tuple(np.linspace(0, 1, 10)), lrs=(1e-3, 3e-3))
    logs = {"loss": np.ones((20, 1)), "sink_excess": np.ones((20, 1, 1))}
    lines = progress.digest(runs, logs, _ONSET, max_rows=5)
    self.assertIn("(5 of 20 grid points)", lines[0])
    self.assertLen(lines, 6)
    self.assertTrue(lines[1].split()[0].startswith("lr=0.001"), lines[1])
    self.assertTrue(lines[-1].split()[0].startswith("lr=0.003"), lines[-1])


class ReporterTest(absltest.TestCase):

  def _chunks(self, reporter, seconds):
    with self.assertLogs("rc_jax", level="INFO") as logs:
      for index, elapsed in enumerate(seconds):
        reporter.chunk(index=index, n_chunks=5, chunk_steps=10, elapsed=elapsed, n_runs=4)
    return [record.getMessage() for record in logs.records]

  def test_rate_and_eta_leave_out_the_first_chunk_once_others_exist(self):
    lines = self._chunks(progress.Reporter(), [8.0, 2.0, 4.0])
    # alone, the first chunk gives the rate: 4 runs x 10 steps / 8 s; ETA 4 chunks x 8 s
    self.assertEqual(lines[0], "chunk 1/5 (step 10/50): 8.0s | 5 run-steps/s | ETA 32s")
    # then the later chunks only: 2 s, then the mean of 2 s and 4 s
    self.assertEqual(lines[1], "chunk 2/5 (step 20/50): 2.0s | 20 run-steps/s | ETA 6.0s")
    self.assertEqual(lines[2], "chunk 3/5 (step 30/50): 4.0s | 13.3 run-steps/s | ETA 6.0s")

  def test_compiling_then_compiled_or_reusing(self):
    size = dict(n_runs=4, n_devices=2, per_device=2, steps=50, chunk_steps=10)
    with self.assertLogs("rc_jax", level="INFO") as logs:
      reporter = progress.Reporter()
      reporter.compiling(cached=False, execution="auto", **size)
      reporter.compiled(12.0, "map(chunk=2)", plan="2 runs per device, budget 8.00 GiB")
      reporter.compiling(cached=True, execution="map(chunk=2)", **size)
    self.assertEqual([record.getMessage() for record in logs.records], [
        "compiling: 4 runs (2 per device x 2 devices, execution auto), 50 steps in 5 chunks of 10",
        "execution auto: 2 runs per device, budget 8.00 GiB",
        "compiled in 12s (execution map(chunk=2))",
        "reusing the compiled program: 4 runs (2 per device x 2 devices, execution map(chunk=2)), "
        "50 steps in 5 chunks of 10"])

  def test_verbose_false_logs_nothing(self):
    with self.assertNoLogs("rc_jax", level="DEBUG"):
      reporter = progress.Reporter(verbose=False)
      reporter.chunk(index=0, n_chunks=1, chunk_steps=1, elapsed=1.0, n_runs=1)
      reporter.info("anything")


class VisibilityTest(absltest.TestCase):

  def test_adds_a_stderr_handler_only_when_nothing_else_shows_the_lines(self):
    logger = logging.Logger("isolated")  # no parent: nothing else would show its records
    progress.ensure_visible(logger)
    self.assertEqual(logger.level, logging.INFO)
    self.assertLen(logger.handlers, 1)
    progress.ensure_visible(logger)
    self.assertLen(logger.handlers, 1)  # not twice
    stream = io.StringIO()
    logger.addHandler(logging.StreamHandler(stream))  # the application configures logging
    progress.ensure_visible(logger)
    self.assertLen(logger.handlers, 1)
    logger.info("shown once")
    self.assertEqual(stream.getvalue(), "shown once\n")

  def test_a_level_set_by_the_user_wins(self):
    logger = logging.Logger("silenced")
    logger.setLevel(logging.WARNING)
    progress.ensure_visible(logger)
    self.assertEqual(logger.level, logging.WARNING)


if __name__ == "__main__":
  absltest.main()

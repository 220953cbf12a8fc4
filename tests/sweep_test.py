"""The sweep engine: one compiled program, runs independent of their batch, sharding, resumption."""

import os
import tempfile

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from rc_jax import config_lib, sweep


def _tiny_config(**execution):
  config = config_lib.base_config("attention", "tiny")
  config.execution.update(execution)
  return config


def _run_state(state, run):
  """Run `run`'s slice of a `[n_devices, per_device, ...]` state."""
  def one(x):
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])[run]
  return jax.tree.map(one, state)


class SweepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.config = _tiny_config()
    cls.result = sweep.run_sweep(cls.config, os.path.join(cls._tmp.name, "full"))

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_sharded_over_four_devices(self):
    self.assertLen(jax.devices(), 4)
    leaf = jax.tree.leaves(self.result.state.params)[0]
    self.assertEqual(leaf.sharding.spec[0], "runs")
    self.assertLen(leaf.sharding.device_set, 4)

  def test_compiles_once(self):
    _, compiled = sweep.compiled_for(self.config)
    self.assertGreater(len(self.result.logs["step"][0]), 3)  # several chunks ran
    self.assertEqual(compiled.chunk._cache_size(), 1)

  def test_logs_cover_the_grid(self):
    runs, logs = self.result.runs, self.result.logs
    self.assertLen(runs, 4)
    self.assertEqual([(r["seed"], r["brake"]) for r in runs], [(0, 0.0), (0, 0.5), (1, 0.0), (1, 0.5)])
    np.testing.assert_array_equal(logs["step"], np.tile([0, 2, 4, 6, 8], (4, 1)))
    self.assertEqual(logs["sink_mass"].shape, (4, 5, 2))
    for name, value in logs.items():
      self.assertTrue(np.all(np.isfinite(value)) or name == "norm_mass_correlation", name)

  def test_run_equals_the_same_run_alone(self):
    trainer, _ = sweep.compiled_for(self.config)
    for run in (1, 2):
      spec = self.result.runs[run]
      state, logs = sweep.single_run(trainer, spec["seed"],
                                     {"brake": spec["brake"], "learning_rate": spec["learning_rate"]})
      for name in ("loss", "sink_mass", "top_source_weight", "effective_rank"):
        np.testing.assert_allclose(self.result.logs[name][run], logs[name], rtol=2e-4, atol=2e-5,
                                   err_msg=name)
      chex.assert_trees_all_close(_run_state(self.result.state, run).params, state.params,
                                  rtol=2e-4, atol=2e-5)

  def test_in_step_metrics_equal_recomputed_ones(self):
    trainer, _ = sweep.compiled_for(self.config)
    run = 3
    spec = self.result.runs[run]
    params = _run_state(self.result.state, run).params
    hparams = {"brake": jnp.float32(spec["brake"]), "learning_rate": jnp.float32(spec["learning_rate"])}
    recomputed = jax.jit(trainer.measure)(params, hparams)
    for name, value in recomputed.items():
      np.testing.assert_allclose(self.result.logs[name][run, -1], value, rtol=1e-4, atol=1e-5,
                                 err_msg=name)

  def test_single_device_equals_sharded(self):
    with tempfile.TemporaryDirectory() as workdir:
      alone = sweep.run_sweep(self.config, workdir, devices=jax.devices()[:1])
    for name in ("loss", "sink_mass", "key_norm_cv"):
      np.testing.assert_allclose(alone.logs[name], self.result.logs[name], rtol=1e-4, atol=1e-5,
                                 err_msg=name)

  def test_interrupted_then_resumed_in_other_modes_equals_uninterrupted(self):
    """Stop after one chunk under `map`, resume under `sequential`: same state and tables."""
    with tempfile.TemporaryDirectory() as workdir:
      partial = sweep.run_sweep(_tiny_config(mode="map", chunk=2), workdir, stop_after_chunks=1)
      self.assertEqual(partial.paths, {})
      self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.csv")))
      resumed = sweep.run_sweep(_tiny_config(mode="sequential"), workdir)
      with open(os.path.join(workdir, "metrics.csv")) as f:
        resumed_csv = f.read().splitlines()
    with open(self.result.paths["metrics"]) as f:
      full_csv = f.read().splitlines()
    for name, value in self.result.logs.items():
      np.testing.assert_allclose(resumed.logs[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    chex.assert_trees_all_close(resumed.state.params, self.result.state.params, rtol=1e-4, atol=1e-5)
    self.assertEqual(len(resumed_csv), len(full_csv))
    self.assertEqual(resumed_csv[0], full_csv[0])

  def test_resuming_with_another_config_is_refused(self):
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(self.config, workdir, stop_after_chunks=1)
      other = _tiny_config()
      other.sweep.brakes = (0.0, 0.25)
      with self.assertRaisesRegex(sweep.WorkdirError, "different config"):
        sweep.run_sweep(other, workdir)

  def test_corrupt_checkpoint_is_a_clear_error(self):
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(self.config, workdir, stop_after_chunks=1)
      step_dir = os.path.join(workdir, "checkpoints", "1")
      for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for name in files:
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"garbage")
      with self.assertRaisesRegex(sweep.WorkdirError, "checkpoints/1 is unreadable"):
        sweep.run_sweep(self.config, workdir)

  def test_resuming_on_another_device_count_is_refused(self):
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(self.config, workdir, stop_after_chunks=1)
      with self.assertRaisesRegex(sweep.WorkdirError, "4 devices"):
        sweep.run_sweep(self.config, workdir, devices=jax.devices()[:1])

  def test_bad_config_writes_nothing(self):
    config = _tiny_config()
    config.sweep.brakes = (0.1, -0.5)
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "never")
      with self.assertRaisesRegex(ValueError, "sweep.brakes"):
        sweep.run_sweep(config, workdir)
      self.assertFalse(os.path.exists(workdir))


if __name__ == "__main__":
  absltest.main()

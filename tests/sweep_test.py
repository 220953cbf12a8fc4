"""The sweep engine: one compiled program, runs independent of their batch, sharding, resumption,
diverged runs isolated, verified checkpoints, bad input refused before anything is written."""

import csv
import errno
import glob
import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rc_jax.engine import config_lib, distributed, grid_limits, sweep


def _tiny_config(**execution):
  config = config_lib.base_config("attention", "tiny")
  config.execution.update(execution)
  return config


def _read(path, mode="r"):
  with open(path, mode) as f:
    return f.read()


def _outputs(workdir):
  return {os.path.relpath(p, workdir): p for p in
          [os.path.join(workdir, n) for n in ("metrics.csv", "onsets.csv", "onset_summary.csv",
                                              "summary.json")] +
          glob.glob(os.path.join(workdir, "figures", "*.png"))}


def _global(config, values):
  """Host `[R, ...]` -> the sweep's run-sharded `[n_devices, per_device, ...]` global array."""
  _, compiled = sweep.compiled_for(config)
  n_devices = compiled.sharding.mesh.size
  per_device, _ = sweep.layout(len(values), n_devices)
  return distributed.global_array(sweep._pad_and_shape(np.asarray(values), n_devices, per_device),
                                  compiled.sharding)


def _train_all_chunks(config, runs):
  """The sweep's compiled init + chunks on `runs` (each may carry any learning rate, NaN too)."""
  trainer, compiled = sweep.compiled_for(config)
  hparams = {name: _global(config, value) for name, value in sweep.hparams_of(runs).items()}
  state, first = compiled.init(_global(config, sweep._key_data(runs)), hparams)
  logs = [jax.tree.map(lambda x: sweep.unlayout(x, len(runs))[:, None], first)]
  for _ in range(trainer.n_chunks):
    state, chunk_logs = compiled.chunk(state, hparams)
    logs.append(sweep.unlayout(chunk_logs, len(runs)))
  logs = {name: np.concatenate([part[name] for part in logs], axis=1) for name in logs[0]}
  return sweep.unlayout(state, len(runs)), logs


def _flip_a_bit_in_every_state_data_file(step_dir):
  """Flips one bit in the middle of each OCDBT data file of the checkpoint's state, so the flip lands
  in bytes the restore reads whichever file holds the arrays (a flip in only the largest file went
  undetected once, under pytest-xdist)."""
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
           if os.path.isfile(f)]
  assert files, f"no OCDBT data files under {step_dir}/state"
  for path in files:
    data = bytearray(_read(path, "rb"))
    data[len(data) // 2] ^= 0x04
    with open(path, "wb") as f:
      f.write(bytes(data))


def _run_state(state, run):
  """Run `run`'s slice of a `[n_devices, per_device, ...]` state."""
  def one(x):
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])[run]
  return jax.tree.map(one, state)


@pytest.mark.slow
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

  @pytest.mark.slow
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

  @pytest.mark.slow
  def test_single_device_equals_sharded(self):
    with tempfile.TemporaryDirectory() as workdir:
      alone = sweep.run_sweep(self.config, workdir, devices=jax.devices()[:1])
    for name in ("loss", "sink_mass", "key_norm_cv"):
      np.testing.assert_allclose(alone.logs[name], self.result.logs[name], rtol=1e-4, atol=1e-5,
                                 err_msg=name)

  @pytest.mark.slow
  def test_interrupted_then_resumed_in_other_modes_equals_uninterrupted(self):
    """Stop after one chunk under `map`, resume under `sequential`: same state and tables (to
    float32 rounding), the mix announced and recorded per chunk."""
    with tempfile.TemporaryDirectory() as workdir:
      partial = sweep.run_sweep(_tiny_config(mode="map", chunk=2), workdir, stop_after_chunks=1)
      self.assertEqual(partial.paths, {})
      self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.csv")))
      with self.assertLogs(level="WARNING") as logs:
        resumed = sweep.run_sweep(_tiny_config(mode="sequential"), workdir)
      self.assertLen([l for l in logs.output if "execution" in l], 1)
      self.assertIn("under execution sequential; its first 1 chunks ran under map(chunk=2)",
                    logs.output[0])
      with open(os.path.join(workdir, "summary.json")) as f:
        self.assertEqual(json.load(f)["execution_per_chunk"], ["map(chunk=2)", "sequential"])
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

  def test_no_intact_checkpoint_is_one_clear_error(self):
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(self.config, workdir, stop_after_chunks=1)
      step_dir = os.path.join(workdir, "checkpoints", "1")
      for root, _, files in os.walk(os.path.join(step_dir, "state")):
        for name in files:
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"garbage")
      with self.assertRaisesRegex(sweep.WorkdirError,
                                  "no intact checkpoint in .*checkpoints: checkpoint .*/1 is "
                                  "damaged"):
        sweep.run_sweep(self.config, workdir)

  def test_flipped_bit_in_latest_checkpoint_falls_back_to_the_previous(self):
    """A silently corrupted latest checkpoint: one warning naming both, identical tables."""
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "copy")
      shutil.copytree(os.path.dirname(self.result.paths["metrics"]), workdir)
      _flip_a_bit_in_every_state_data_file(os.path.join(workdir, "checkpoints", "2"))
      # rc_jax warns through absl; Orbax's failed reads may also leave asyncio "Task exception was
      # never retrieved" errors, logged whenever their tasks are collected: not ours to count
      with self.assertLogs("absl", level="WARNING") as logs:
        result = sweep.run_sweep(self.config, workdir)
      self.assertLen(logs.output, 1)
      self.assertRegex(logs.output[0], r"checkpoint .*copy/checkpoints/2 is damaged \(.*\); "
                                       r"deleted and resuming from .*copy/checkpoints/1")
      self.assertFalse(result.already_complete)
      self.assertEqual(_read(result.paths["metrics"]), _read(self.result.paths["metrics"]))
      self.assertEqual(sorted(os.listdir(os.path.join(workdir, "checkpoints"))), ["1", "2"])

  def test_resuming_on_another_device_count_is_refused(self):
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(self.config, workdir, stop_after_chunks=1)
      with self.assertRaisesRegex(sweep.WorkdirError, "4 devices"):
        sweep.run_sweep(self.config, workdir, devices=jax.devices()[:1])

  def test_same_config_and_seed_give_byte_identical_tables(self):
    with tempfile.TemporaryDirectory() as workdir:
      again = sweep.run_sweep(self.config, workdir)
      for name in ("metrics", "onsets"):
        self.assertEqual(_read(again.paths[name], "rb"), _read(self.result.paths[name], "rb"),
                         name)

  def test_rerun_of_a_finished_sweep_rewrites_nothing_unless_asked(self):
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "copy")
      shutil.copytree(os.path.dirname(self.result.paths["metrics"]), workdir)
      files = _outputs(workdir)
      before = {name: (os.stat(p).st_mtime_ns, _read(p, "rb")) for name, p in files.items()}
      with self.assertLogs(level="WARNING") as logs:
        rerun = sweep.run_sweep(self.config, workdir)
      self.assertTrue(rerun.already_complete)
      self.assertIn("holds a finished sweep of this config: nothing recomputed or rewritten",
                    logs.output[0])
      self.assertEqual({n: (os.stat(p).st_mtime_ns, _read(p, "rb")) for n, p in files.items()},
                       before)
      self.assertEqual(sorted(rerun.paths.values()), sorted(files.values()))
      rewritten = sweep.run_sweep(self.config, workdir, overwrite_outputs=True)
      self.assertFalse(rewritten.already_complete)
      self.assertNotEqual(os.stat(files["metrics.csv"]).st_mtime_ns,
                          before["metrics.csv"][0])
      self.assertEqual(_read(files["metrics.csv"], "rb"), before["metrics.csv"][1])
      timings = json.loads(_read(files["summary.json"]))["timings"]
      self.assertGreater(timings["compile_s"], 0.0)  # kept from the run that trained
      self.assertGreater(timings["total_s"], timings["compile_s"])

  def test_stale_tmp_files_of_dead_processes_are_removed(self):
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "copy")
      shutil.copytree(os.path.dirname(self.result.paths["metrics"]), workdir)
      dead = os.path.join(workdir, ".metrics.csv.999999999.0123abcd.tmp")
      dead_figure = os.path.join(workdir, "figures", ".phase_diagram.png.999999999.89abcdef.tmp")
      live = os.path.join(workdir, f".onsets.csv.{os.getppid()}.0123abcd.tmp")
      for path in (dead, dead_figure, live):
        with open(path, "w") as f:
          f.write("partial")
      sweep.run_sweep(self.config, workdir)
      self.assertFalse(os.path.exists(dead))
      self.assertFalse(os.path.exists(dead_figure))
      self.assertTrue(os.path.exists(live))  # another live process might be writing it

  def test_disk_full_mid_save_is_one_error_and_the_resume_is_exact(self):
    real_save = ocp.CheckpointManager.save
    def save_once_then_fail(manager, step, *args, **kwargs):
      if step >= 2:
        raise OSError(errno.ENOSPC, "No space left on device")
      return real_save(manager, step, *args, **kwargs)
    with tempfile.TemporaryDirectory() as workdir:
      with mock.patch.object(ocp.CheckpointManager, "save", save_once_then_fail):
        with self.assertRaisesRegex(sweep.WorkdirError,
                                    r"cannot write checkpoint .*/2 \(OSError: \[Errno 28\] No "
                                    r"space left on device\); checkpoints up to .*/1 are intact"):
          sweep.run_sweep(self.config, workdir)
      self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.csv")))
      resumed = sweep.run_sweep(self.config, workdir)
      self.assertEqual(_read(resumed.paths["metrics"], "rb"),
                       _read(self.result.paths["metrics"], "rb"))

  def test_disk_full_while_writing_outputs_leaves_no_partial_file(self):
    real_fsync = os.fsync
    def fsync_fails_on_metrics(fd):
      if "metrics.csv" in os.readlink(f"/proc/self/fd/{fd}"):
        raise OSError(errno.ENOSPC, "No space left")
      return real_fsync(fd)
    with tempfile.TemporaryDirectory() as workdir:
      with mock.patch.object(os, "fsync", fsync_fails_on_metrics):
        with self.assertRaisesRegex(sweep.WorkdirError, "cannot write the outputs into .*No space"
                                    ".*the sweep is checkpointed: free space and rerun"):
          sweep.run_sweep(self.config, workdir)
      self.assertEqual([n for n in os.listdir(workdir) if n.endswith(".tmp")], [])
      self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.csv")))
      resumed = sweep.run_sweep(self.config, workdir)
      self.assertEqual(_read(resumed.paths["metrics"], "rb"),
                       _read(self.result.paths["metrics"], "rb"))

  def test_planted_nan_and_blow_up_are_frozen_and_isolated(self):
    """Run 1 blows up (learning rate 1e3: finite, huge loss), run 2 gets NaN updates; runs 0 and 3
    are bit-identical to the same sweep without them, the two diverged runs are frozen."""
    runs = config_lib.run_grid(self.config)
    planted = [dict(r) for r in runs]
    planted[1]["learning_rate"], planted[2]["learning_rate"] = 1e3, float("nan")
    state, logs = _train_all_chunks(self.config, planted)
    clean_state, clean_logs = _train_all_chunks(self.config, runs)
    for run in (0, 3):
      for name in logs:
        np.testing.assert_array_equal(logs[name][run], clean_logs[name][run], err_msg=name)
      chex.assert_trees_all_equal(jax.tree.map(lambda x: x[run], state),
                                  jax.tree.map(lambda x: x[run], clean_state))
    np.testing.assert_array_equal(state.diverged_at, [-1, 1, 0, -1])
    steps = logs["step"][0]
    for run, at in ((1, 1), (2, 0)):
      for name, value in logs.items():
        if name != "step":
          self.assertTrue(np.all(np.isnan(value[run][steps > at])), (run, name))
          self.assertTrue(np.all(np.isfinite(value[run][steps <= at]))
                          or name == "norm_mass_correlation", (run, name))
    # run 1 diverged on a finite loss: its frozen parameters are finite and their loss is huge
    trainer, _ = sweep.compiled_for(self.config)
    self.assertTrue(all(np.all(np.isfinite(x[1])) for x in jax.tree.leaves(state.params)))
    frozen = jax.tree.map(lambda x: jnp.asarray(x[1]), state.params)
    hparams = {"brake": jnp.float32(runs[1]["brake"]), "learning_rate": jnp.float32(1e3)}
    blown_up = jax.jit(trainer.measure)(frozen, hparams)["probe_loss"]
    self.assertTrue(np.isfinite(blown_up))
    self.assertGreater(float(blown_up), float(state.initial_loss[1]) +
                       self.config.train.divergence_nats)

  def test_diverged_runs_in_the_outputs(self):
    """A learning rate of 1e3 next to 3e-3: status, diverged_step, clean aggregates, and the
    healthy runs' rows byte-identical to the same-sized sweep without the diverging runs."""
    def grid(learning_rates):
      config = _tiny_config()
      config.sweep.update(seeds=(0,), learning_rates=learning_rates)
      return config
    with tempfile.TemporaryDirectory() as tmp:
      diverging = sweep.run_sweep(grid((3e-3, 1e3)), os.path.join(tmp, "diverging"))
      healthy = sweep.run_sweep(grid((3e-3, 1e-3)), os.path.join(tmp, "healthy"))
      with open(diverging.paths["metrics"]) as f:
        rows = list(csv.DictReader(f))
      with open(diverging.paths["summary"]) as f:
        summary = json.load(f)
      with open(diverging.paths["onsets"]) as f:
        onsets = list(csv.DictReader(f))
      lines = _read(diverging.paths["metrics"]).splitlines()
      healthy_lines = _read(healthy.paths["metrics"]).splitlines()
    self.assertEqual([(r["status"], r["diverged_step"]) for r in diverging.runs],
                     [("ok", None), ("ok", None), ("diverged", 1), ("diverged", 1)])
    self.assertEqual(summary["n_diverged"], 2)
    self.assertEqual(summary["diverged"], [2, 3])
    self.assertEqual({(r["run"], r["status"], r["diverged_step"]) for r in rows},
                     {("0", "ok", ""), ("1", "ok", ""), ("2", "diverged", "1"),
                      ("3", "diverged", "1")})
    self.assertEqual([o["onset_step"] for o in onsets[2:]], ["", ""])
    for point in summary["by_brake"]:  # the diverged runs are left out, never NaN-poisoning
      self.assertEqual(point["final_concentration"]["n"], 0 if point["learning_rate"] == 1e3 else 1)
      if point["learning_rate"] == 1e3:
        self.assertEqual(point["n_onset"], 0)
    # the healthy runs (0, 1: lr 3e-3) are the first rows of both tables, byte for byte
    n_rows = len(lines[1:]) // 2
    self.assertEqual(lines[0], healthy_lines[0])
    self.assertEqual(lines[1:1 + n_rows], healthy_lines[1:1 + n_rows])

  def test_bad_workdirs_are_refused_before_anything_is_written(self):
    with tempfile.TemporaryDirectory() as tmp:
      regular = os.path.join(tmp, "file")
      with open(regular, "w") as f:
        f.write("x")
      cases = {"": "the workdir is empty",
               regular: "exists and is not a directory",
               os.path.join(regular, "sub"): "cannot be created: .*file is not a directory"}
      for workdir, message in cases.items():
        with self.assertRaisesRegex(sweep.WorkdirError, message):
          sweep.run_sweep(self.config, workdir)
      read_only = os.path.join(tmp, "read_only")
      os.mkdir(read_only)
      with mock.patch.object(os, "access", return_value=False):
        with self.assertRaisesRegex(sweep.WorkdirError, "is not writable .*read_only is read-only"):
          sweep.run_sweep(self.config, os.path.join(read_only, "w"))
      self.assertEqual(sorted(os.listdir(tmp)), ["file", "read_only"])
      self.assertEqual(os.listdir(read_only), [])

  def test_empty_or_short_text_file_is_refused_before_anything_is_written(self):
    with tempfile.TemporaryDirectory() as tmp:
      for name, content in (("empty.txt", b""), ("short.txt", b"0123456789")):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
          f.write(content)
        config = _tiny_config()
        config.task.update(name="text_file", path=path)
        with self.assertRaisesRegex(ValueError, f"{name}.* has {len(content)} bytes, fewer than "
                                    "seq_len=16"):
          sweep.run_sweep(config, os.path.join(tmp, "w"))
      self.assertFalse(os.path.exists(os.path.join(tmp, "w")))

  def test_grid_too_large_is_refused_before_anything_is_written(self):
    config = _tiny_config()
    config.sweep.update(seeds=tuple(range(100)), brakes=tuple(np.linspace(0, 1, 100)),
                        learning_rates=tuple(np.geomspace(1e-4, 1e-2, 100)))
    with tempfile.TemporaryDirectory() as tmp:
      with self.assertRaisesRegex(ValueError, r"config.sweep .*1000000 runs exceed the limit of "
                                  r"100000 per sweep"):
        sweep.run_sweep(config, os.path.join(tmp, "w"))
      self.assertEqual(os.listdir(tmp), [])

  def test_bad_config_writes_nothing(self):
    config = _tiny_config()
    config.sweep.brakes = (0.1, -0.5)
    with tempfile.TemporaryDirectory() as tmp:
      workdir = os.path.join(tmp, "never")
      with self.assertRaisesRegex(ValueError, "sweep.brakes"):
        sweep.run_sweep(config, workdir)
      self.assertFalse(os.path.exists(workdir))


class GridLimitsTest(absltest.TestCase):
  """The memory and disk plan of a grid, against hand-computed sizes."""

  STATE = {"params": jax.ShapeDtypeStruct((1000,), jnp.float32)}       # 4000 B a run
  LOGS = {"loss": jax.ShapeDtypeStruct((), jnp.float32),
          "sink_mass": jax.ShapeDtypeStruct((2,), jnp.float32)}       # 12 B a logged step

  def check(self, **capacity):
    capacity = dict(dict(device_bytes=10**9, host_bytes=10**9, disk_bytes=10**9), **capacity)
    grid_limits.check_grid(100, 4, self.STATE, self.LOGS, 10, max_to_keep=2, workdir="/tmp",
                           **capacity)

  def test_fits(self):
    self.check()

  def test_state_per_device(self):
    self.check(device_bytes=2 * 25 * 4000)  # 25 runs a device, state and its update: just fits
    with self.assertRaisesRegex(ValueError, r"^config.sweep .*: 100 runs need 195 KiB per device "
                                r"for training state and its update \(25 runs x 3.91 KiB x 2 on "
                                r"each of 4 devices\), more than a device's 195 KiB"):
      self.check(device_bytes=2 * 25 * 4000 - 1)

  def test_logs_in_host_memory(self):
    logs = 100 * 10 * 12
    self.check(host_bytes=4 * logs)
    with self.assertRaisesRegex(ValueError, "100 runs x 10 logged steps need 23.4 KiB of host "
                                "memory for their logs"):
      self.check(host_bytes=4 * logs - 4)

  def test_disk(self):
    csv_bytes = 100 * 10 * 2 * (8 + 2) * 12          # runs x steps x layers x columns x 12 B
    checkpoints_bytes = int(1.5 * 3 * (100 * 4000 + 100 * 10 * 12))
    self.check(disk_bytes=csv_bytes + checkpoints_bytes)
    with self.assertRaisesRegex(ValueError, r"need about 2 MiB on disk \(checkpoints 1.77 MiB, "
                                r"metrics.csv 234 KiB\), more than the 2 MiB free under /tmp"):
      self.check(disk_bytes=csv_bytes + checkpoints_bytes - 1)

  def test_run_count(self):
    with self.assertRaisesRegex(ValueError, "100001 runs exceed the limit of 100000"):
      grid_limits.check_grid(100_001, 4, self.STATE, self.LOGS, 10, max_to_keep=2,
                             workdir="/tmp")


if __name__ == "__main__":
  absltest.main()

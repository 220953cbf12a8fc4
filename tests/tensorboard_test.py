"""TensorBoard event files of a sweep, read back: every logged metric per run, resumption-safe."""

import os
import struct
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from rc_jax.engine import config_lib, sweep
from rc_jax.outputs import tensorboard


def _config():
  config = config_lib.base_config("attention", "tiny")
  config.output.tensorboard = True
  return config


class RunNameTest(absltest.TestCase):

  def test_shortest_positional_numbers(self):
    run = dict(run=3, seed=1, learning_rate=3e-3, brake=0.0)
    self.assertEqual(tensorboard.run_name(run), "seed=1/lr=0.003/brake=0")
    self.assertEqual(tensorboard.run_name(dict(seed=0, learning_rate=1e-5, brake=0.25)),
                     "seed=0/lr=0.00001/brake=0.25")


@pytest.mark.slow
class SweepEventsTest(absltest.TestCase):
  """A sweep interrupted after its first chunk, a stale file, then resumed."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.workdir = cls._tmp.name
    config = _config()
    sweep.run_sweep(config, cls.workdir, stop_after_chunks=1, verbose=False)
    cls.logdir = os.path.join(cls.workdir, "tensorboard")
    cls.after_stop = tensorboard.read_scalars(cls.logdir)
    # an attempt that died after writing step 6 but before its checkpoint: its points must go
    runs = config_lib.run_grid(config)
    stale = tensorboard.SweepWriter(cls.logdir, runs, first_step=5)
    stale.write({"step": np.full((4, 1), 6), "loss": np.full((4, 1), 999.0),
                 config.metrics.onset_metric: np.full((4, 1, 2), 999.0)}, sweep.onset_config(config))
    stale.close()
    cls.result = sweep.run_sweep(config, cls.workdir, verbose=False)
    cls.scalars = tensorboard.read_scalars(cls.logdir)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_one_directory_per_run(self):
    self.assertEqual(sorted(self.scalars),
                     sorted(tensorboard.run_name(r) for r in self.result.runs))
    self.assertIn("seed=0/lr=0.003/brake=0.5", self.scalars)

  def test_written_per_chunk(self):
    steps, _ = self.after_stop["seed=0/lr=0.003/brake=0"]["loss"]
    np.testing.assert_array_equal(steps, [0, 2, 4])  # step 0 and the first chunk, before the end

  def test_every_logged_metric_per_layer_and_the_onset_metric(self):
    logs = self.result.logs
    steps = logs["step"][0]
    for r, run in enumerate(self.result.runs):
      tags = self.scalars[tensorboard.run_name(run)]
      onset = _config().metrics.onset_metric  # reduced with "max" in the tiny preset
      expected = {"loss": logs["loss"][r], "probe_loss": logs["probe_loss"][r],
                  f"{onset}/max": logs[onset][r].max(-1)}
      for name, value in logs.items():
        if np.ndim(value) == 3:
          expected.update((f"{name}/layer_{l}", value[r, :, l]) for l in range(value.shape[2]))
      self.assertContainsSubset(expected, tags)
      for tag, values in expected.items():
        got_steps, got = tags[tag]
        np.testing.assert_array_equal(got_steps, steps, err_msg=tag)
        np.testing.assert_allclose(got, np.asarray(values, np.float32), rtol=1e-6, err_msg=tag)

  def test_files_are_tfrecords_of_events(self):
    """TFRecord framing read by hand: length, length CRC, payload, payload CRC; first an Event."""
    from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
    directory = os.path.join(self.logdir, "seed=1", "lr=0.003", "brake=0")
    files = sorted(os.listdir(directory))
    self.assertLen(files, 3)  # first attempt, stale attempt, resumption
    self.assertTrue(all(".out.tfevents." in name for name in files))
    with open(os.path.join(directory, files[-1]), "rb") as f:
      data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    first = event_pb2.Event.FromString(data[12:12 + length])
    self.assertEqual(first.file_version, "brain.Event:2")
    (length2,) = struct.unpack("<Q", data[16 + length:24 + length])
    second = event_pb2.Event.FromString(data[28 + length:28 + length + length2])
    self.assertEqual(second.session_log.status, event_pb2.SessionLog.START)
    self.assertEqual(second.step, 5)  # resumed after the checkpoint at step 4

  def test_tensorboard_off_writes_no_events(self):
    config = config_lib.base_config("attention", "tiny")
    with tempfile.TemporaryDirectory() as workdir:
      sweep.run_sweep(config, workdir, stop_after_chunks=1, verbose=False)
      self.assertFalse(os.path.exists(os.path.join(workdir, "tensorboard")))


if __name__ == "__main__":
  absltest.main()

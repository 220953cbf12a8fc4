"""Verified checkpoints: digests of state and logs, fallback from damaged checkpoints, one error."""

import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import jax
import numpy as np
import orbax.checkpoint as ocp

from rc_jax.engine import checkpoints

_MESH = jax.sharding.Mesh(np.asarray(jax.devices()), ("runs",),
                          axis_types=(jax.sharding.AxisType.Auto,))
_SHARDING = jax.sharding.NamedSharding(_MESH, jax.sharding.PartitionSpec("runs"))


def _host_state(step):
  """A run-batched state `[4 devices, 2 runs, ...]`; large enough that its data is stored raw."""
  rng = np.random.default_rng(step)
  return {"params": rng.standard_normal((4, 2, 8192)).astype(np.float32),
          "step": np.full((4, 2), step, np.int32)}


def _state(step):
  return jax.tree.map(lambda x: jax.device_put(x, _SHARDING), _host_state(step))


def _logs(step):
  return {"loss": np.linspace(0.0, 1.0, 3 * step).reshape(3, step).astype(np.float32),
          "step": np.arange(step, dtype=np.int32)[None].repeat(3, 0)}


_ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_SHARDING),
                         _host_state(0))


def _files(step_dir, item):
  return [f for f in glob.glob(os.path.join(step_dir, item, "**", "*"), recursive=True)
          if os.path.isfile(f)]


def _edit(path, change):
  with open(path, "rb") as f:
    data = bytearray(f.read())
  with open(path, "wb") as f:
    f.write(bytes(change(data)))


def _accept(meta):
  del meta


class DigestTest(absltest.TestCase):

  def test_one_digest_per_device_row_that_sees_only_that_row(self):
    host = _host_state(1)
    digests = checkpoints.state_digests(_state(1))
    self.assertLen(digests, 4)
    self.assertLen(set(digests), 4)
    changed = jax.tree.map(np.copy, host)
    changed["params"][2, 1, 100] += 1.0
    new = checkpoints.state_digests(jax.tree.map(lambda x: jax.device_put(x, _SHARDING), changed))
    self.assertEqual([a == b for a, b in zip(digests, new)], [True, True, False, True])

  def test_digests_do_not_depend_on_the_devices_holding_the_rows(self):
    on_one_device = jax.tree.map(lambda x: jax.device_put(x, jax.devices()[0]), _host_state(1))
    self.assertEqual(checkpoints.state_digests(on_one_device),
                     checkpoints.state_digests(_state(1)))
    self.assertEqual(checkpoints.state_digests(_host_state(1)),
                     checkpoints.state_digests(_state(1)))

  def test_logs_digest_is_sha256_of_names_dtypes_shapes_and_bytes(self):
    logs = _logs(2)
    reference = hashlib.sha256()
    for name in ("loss", "step"):
      reference.update(f"{name}|{logs[name].dtype.str}|{logs[name].shape}|".encode())
      reference.update(logs[name].tobytes())
    self.assertEqual(checkpoints.logs_digest(logs), reference.hexdigest())
    logs["loss"][1, 1] = np.nextafter(logs["loss"][1, 1], np.float32(2))
    self.assertNotEqual(checkpoints.logs_digest(logs), reference.hexdigest())


class VerifiedCheckpointsTest(absltest.TestCase):
  """Checkpoints 1 and 2 (saved once, copied per test); 2 is damaged in various ways."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.pristine = os.path.join(cls._tmp.name, "pristine")
    store = checkpoints.VerifiedCheckpoints(cls.pristine, max_to_keep=2)
    for step in (1, 2):
      store.save(step, _state(step), _logs(step), {"chunks_done": step})
    store.close()

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.directory = os.path.join(tmp.name, "checkpoints")
    shutil.copytree(self.pristine, self.directory)

  def _restore(self, check_meta=_accept):
    store = checkpoints.VerifiedCheckpoints(self.directory, max_to_keep=2)
    try:
      return store.restore_latest(_ABSTRACT, check_meta)
    finally:
      store.close()

  def _assert_falls_back(self, reason_pattern):
    # rc_jax's warnings (absl), not Orbax's asyncio "Task exception was never retrieved" errors
    with self.assertLogs("absl", level="WARNING") as logs:
      restored = self._restore()
    self.assertLen(logs.output, 1)
    self.assertRegex(logs.output[0],
                     rf"checkpoint {self.directory}/2 is damaged \({reason_pattern}\); deleted and "
                     rf"resuming from {self.directory}/1$")
    self.assertEqual(restored.step, 1)
    np.testing.assert_array_equal(restored.state["params"], _host_state(1)["params"])
    self.assertFalse(os.path.exists(os.path.join(self.directory, "2")))

  def test_round_trip_with_digests(self):
    restored = self._restore()
    self.assertEqual(restored.step, 2)
    for name, value in _host_state(2).items():
      np.testing.assert_array_equal(restored.state[name], value)
      self.assertEqual(restored.state[name].sharding, _SHARDING)
    for name, value in _logs(2).items():
      np.testing.assert_array_equal(restored.logs[name], value)
    self.assertEqual(restored.meta["chunks_done"], 2)
    self.assertEqual(restored.meta["state_digest"], checkpoints.state_digests(_state(2)))

  def test_flipped_bit_in_state_data(self):
    largest = max(_files(os.path.join(self.directory, "2"), "state"), key=os.path.getsize)
    def flip(data):
      data[len(data) // 2] ^= 0x01
      return data
    _edit(largest, flip)
    self._assert_falls_back("state digest mismatch .*")

  def test_garbled_bytes_in_every_logs_file(self):
    def garble(data):
      data[len(data) // 2:len(data) // 2 + 32] = b"\xff" * len(data[len(data) // 2:][:32])
      return data
    for path in _files(os.path.join(self.directory, "2"), "logs"):
      _edit(path, garble)
    self._assert_falls_back(".+")

  def test_truncated_state_file(self):
    largest = max(_files(os.path.join(self.directory, "2"), "state"), key=os.path.getsize)
    _edit(largest, lambda data: data[:len(data) // 3])
    self._assert_falls_back("unreadable: .*")

  def test_edited_meta(self):
    path = os.path.join(self.directory, "2", "meta", "metadata")
    with open(path) as f:
      meta = json.load(f)
    meta["chunks_done"] = 7
    with open(path, "w") as f:
      json.dump(meta, f)
    self._assert_falls_back("meta digest mismatch")

  def test_logs_not_matching_their_digest(self):
    """A consistent meta whose logs digest disagrees (what a silently changed logs file gives)."""
    path = os.path.join(self.directory, "2", "meta", "metadata")
    with open(path) as f:
      meta = json.load(f)
    meta["logs_digest"] = checkpoints.logs_digest(_logs(1))
    meta["meta_digest"] = checkpoints.meta_digest(meta)
    with open(path, "w") as f:
      json.dump(meta, f)
    self._assert_falls_back("logs digest mismatch")

  def test_half_written_checkpoint_directory(self):
    """A step directory missing its state (a copy cut short) falls back; Orbax's temporary
    directory of a save killed midway is removed."""
    shutil.rmtree(os.path.join(self.directory, "2", "state"))
    tmp_dir = os.path.join(self.directory, "3.orbax-checkpoint-tmp-1234567890")
    shutil.copytree(os.path.join(self.directory, "1"), tmp_dir)
    self._assert_falls_back("unreadable: .*")
    self.assertFalse(os.path.exists(tmp_dir))

  def test_none_intact_is_one_error(self):
    for step in ("1", "2"):
      for path in _files(os.path.join(self.directory, step), "state"):
        _edit(path, lambda data: b"garbage")
    with self.assertRaisesRegex(checkpoints.WorkdirError,
                                rf"^no intact checkpoint in {self.directory}: checkpoint "
                                rf"{self.directory}/2 is damaged \(.*\); checkpoint "
                                rf"{self.directory}/1 is damaged \(.*\); delete that directory"):
      self._restore()
    self.assertTrue(os.path.exists(os.path.join(self.directory, "1")))

  def test_checkpoint_of_another_config_is_an_error_not_damage(self):
    def refuse(meta):
      raise checkpoints.WorkdirError(f"another config ({meta['chunks_done']})")
    with self.assertRaisesRegex(checkpoints.WorkdirError, r"another config \(2\)"):
      self._restore(refuse)
    self.assertTrue(os.path.exists(os.path.join(self.directory, "2")))

  def test_write_error_names_the_intact_checkpoint(self):
    store = checkpoints.VerifiedCheckpoints(self.directory, max_to_keep=2)
    with mock.patch.object(ocp.CheckpointManager, "save",
                           side_effect=OSError(errno.ENOSPC, "No space left on device")):
      with self.assertRaisesRegex(checkpoints.CheckpointWriteError,
                                  rf"^cannot write checkpoint {self.directory}/3 \(OSError: "
                                  rf"\[Errno 28\] No space left on device\); checkpoints up to "
                                  rf"{self.directory}/2 are intact"):
        store.save(3, _state(3), _logs(3), {"chunks_done": 3})
    store.close()

  def test_max_to_keep_below_two_is_refused(self):
    with self.assertRaisesRegex(ValueError, "max_to_keep must be >= 2"):
      checkpoints.VerifiedCheckpoints(self.directory, max_to_keep=1)


if __name__ == "__main__":
  absltest.main()

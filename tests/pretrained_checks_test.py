"""Pretrained inputs refused with one line: corrupt weights (named by tensor), a probe too short to
hold text, a workdir that cannot be written."""

import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
from safetensors.numpy import save_file

from rc_jax import pretrained
from rc_jax.pretrained import loading
import pretrained_cli_test  # pylint: disable=g-bad-import-order  (sibling test helpers)
import pretrained_errors_test  # pylint: disable=g-bad-import-order

_TENSOR = "h.1.mlp.c_fc.weight"


class CorruptWeightsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.path = os.path.join(self.root, "gpt2")
    self.tensors = pretrained_errors_test.write_checkpoint(self.path,
                                                           pretrained_errors_test.TINY_GPT2)

  def _rewrite(self, name, change):
    self.tensors[name] = change(self.tensors[name].copy())
    save_file(self.tensors, os.path.join(self.path, "model.safetensors"))

  def test_intact_weights_load(self):
    pretrained.load(self.path)

  def test_non_finite_value_is_named_by_tensor(self):
    def plant(x):
      x.flat[7], x.flat[9] = np.nan, np.inf
      return x
    self._rewrite(_TENSOR, plant)
    with self.assertRaisesRegex(ValueError, rf"{self.path}: tensor '{_TENSOR}' holds 2 non-finite "
                                r"value\(s\) \(NaN or inf\): the checkpoint is corrupt"):
      pretrained.load(self.path)

  def test_absurd_magnitude_is_named_by_tensor(self):
    def plant(x):
      x.flat[3] = -3e7
      return x
    self._rewrite(_TENSOR, plant)
    with self.assertRaisesRegex(ValueError, rf"tensor '{_TENSOR}' holds a value of magnitude "
                                r"3e\+07, above 10000"):
      pretrained.load(self.path)
    self.assertGreater(loading.MAX_ABS_WEIGHT, 7.9)  # all-MiniLM-L6-v2's largest weight

  def test_four_kilobytes_of_0xff_are_refused(self):
    file = os.path.join(self.path, "model.safetensors")
    with open(file, "r+b") as f:
      f.seek(os.path.getsize(file) // 2)
      f.write(b"\xff" * 4096)
    with self.assertRaisesRegex(ValueError, r"tensor '.+' holds \d+ non-finite value"):
      pretrained.load(self.path)


class CliInputTest(absltest.TestCase):
  """Through the launcher in-process (pretrained_cli_test's harness)."""

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
    self.gpt2 = os.path.join(self.root, "tiny-gpt2")
    pretrained_cli_test.write_model(self.gpt2, pretrained_cli_test.TINY_GPT2)
    self.cli = pretrained_cli_test.CliTest("run_cli")

  def assert_one_error(self, message, *args):
    status, stderr = self.cli.run_cli(f"--checkpoint={self.gpt2}", *args)
    self.assertEqual(status, 2, stderr)
    self.assertLen(stderr.strip().splitlines(), 1, stderr)
    self.assertIn(message, stderr)

  def test_max_tokens_too_small_for_text(self):
    self.assert_one_error("max_tokens", "--max_tokens=3", f"--workdir={self.root}/out")
    self.assertFalse(os.path.exists(os.path.join(self.root, "out")))

  def test_read_only_workdir(self):
    read_only = os.path.join(self.root, "read_only")
    os.mkdir(read_only)
    with mock.patch.object(os, "access", return_value=False):
      self.assert_one_error(f"--workdir {read_only}/out is not writable ({read_only}:",
                            f"--workdir={read_only}/out")
    self.assertEqual(os.listdir(read_only), [])

  def test_workdir_below_a_file(self):
    with open(os.path.join(self.root, "a_file"), "w") as f:
      f.write("x")
    self.assert_one_error("cannot be created", f"--workdir={self.root}/a_file/out")

  def test_corrupt_weights_name_the_tensor_and_write_nothing(self):
    tensors = pretrained_errors_test.write_checkpoint(self.gpt2, pretrained_cli_test.TINY_GPT2)
    tensors[_TENSOR].flat[0] = np.nan
    save_file(tensors, os.path.join(self.gpt2, "model.safetensors"))
    self.assert_one_error(f"tensor '{_TENSOR}' holds 1 non-finite value",
                          f"--workdir={self.root}/out")
    self.assertEqual(sorted(os.listdir(self.root)), ["tiny-gpt2"])


if __name__ == "__main__":
  absltest.main()

"""Two processes on localhost (CPU devices, gloo collectives) run one sweep together, are both
killed after the first checkpoint and restarted: the resumed sweep's tables are byte-identical to
one process's over the same number of devices (one test: the two-process run, its checkpoint and
its resume in one go)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import pytest

from rc_jax.engine import config_lib, sweep

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
_LAUNCHER = os.path.join(_ROOT, "experiments", "sweep.py")
_TABLES = ("metrics.csv", "onsets.csv")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _read(path):
  with open(path, "rb") as f:
    return f.read()


@pytest.mark.slow
class TwoProcessSweepTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    # the reference: this process's 4 CPU devices (conftest); each child process has 2
    reference = sweep.run_sweep(config_lib.base_config("attention", "tiny"),
                                os.path.join(cls._tmp.name, "reference"))
    cls.reference = {name: _read(os.path.join(os.path.dirname(reference.paths["metrics"]), name))
                     for name in _TABLES}
    cls.env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2 "
                             "--xla_backend_optimization_level=0 "
                             "--xla_cpu_use_fusion_emitters=false",  # as this process (conftest)
                   RC_JAX_CACHE_DIR=os.path.join(cls._tmp.name, "compilation_cache"))

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _launch(self, workdir):
    port = _free_port()
    return [subprocess.Popen(
        [sys.executable, _LAUNCHER, f"--config={_ROOT}/configs/attention.py:tiny",
         f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}"], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=_ROOT) for i in range(2)]

  def _finish(self, processes):
    finished = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, finished):
      self.assertEqual(p.returncode, 0, stderr[-3000:])
    return finished

  def _assert_tables_equal_reference(self, workdir):
    for name in _TABLES:
      self.assertEqual(_read(os.path.join(workdir, name)), self.reference[name], name)

  def test_both_killed_mid_run_then_restarted_give_the_one_process_tables(self):
    workdir = os.path.join(self._tmp.name, "killed")
    processes = self._launch(workdir)
    first = os.path.join(workdir, "checkpoints", "1")
    while not os.path.isdir(first):
      self.assertTrue(all(p.poll() is None for p in processes), "a process ended before chunk 1")
      time.sleep(0.01)
    for p in reversed(processes):  # process 1 first, as a lost host; then process 0
      p.send_signal(signal.SIGKILL)
    for p in processes:
      p.communicate()
    self.assertFalse(os.path.exists(os.path.join(workdir, "metrics.csv")))
    (out0, err0), (out1, _) = self._finish(self._launch(workdir))
    self.assertIn("resuming", err0)
    self.assertIn("from chunk 1/2", err0)
    self._assert_tables_equal_reference(workdir)
    self.assertIn("4 runs done", out0)
    self.assertNotIn("runs done", out1)  # only process 0 reports and writes outputs


if __name__ == "__main__":
  absltest.main()

"""experiments/sweep.py end to end: every config's tiny preset, and bad flags."""

import csv
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest, parameterized
import pytest

from rc_jax import config_lib

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
_LAUNCHER = os.path.join(_ROOT, "experiments", "sweep.py")
ROUTERS = ("attention", "graph", "ssm", "rwkv", "depth")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _launch(*flags):
  return subprocess.Popen([sys.executable, _LAUNCHER, *flags], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=_ROOT)


@pytest.mark.slow
class LauncherTinyPresetsTest(parameterized.TestCase):
  """All five tiny sweeps run concurrently once; each test checks one workdir."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    procs = {r: _launch(f"--config={_ROOT}/configs/{r}.py:tiny",
                        f"--workdir={cls._tmp.name}/{r}") for r in ROUTERS}
    cls.finished = {r: (p.wait(timeout=600), p.stdout.read(), p.stderr.read())
                    for r, p in procs.items()}

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @parameterized.parameters(*ROUTERS)
  def test_tiny_preset_writes_every_output(self, router):
    code, stdout, stderr = self.finished[router]
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn("runs done", stdout)
    # progress on stderr: devices, program size before compiling, one line per chunk with digest
    for line in ("devices: ", "compiling: 4 runs", "chunk 1/2 (step 4/8): compiling+first chunk",
                 "chunk 2/2 (step 8/8): ", "min/med/max"):
      self.assertIn(line, stderr)
    self.assertNotIn("libtpu", stderr)  # no INFO chatter of JAX probing absent accelerators
    workdir = os.path.join(self._tmp.name, router)
    with open(os.path.join(workdir, "config.json")) as f:
      self.assertEqual(json.load(f)["router"], router)
    with open(os.path.join(workdir, "metrics.csv")) as f:
      rows = list(csv.DictReader(f))
    n_runs, n_logged = 4, 5  # tiny: 2 seeds x 2 brakes; steps 0, 2, 4, 6, 8
    n_layers = len({r["layer"] for r in rows})
    self.assertEqual(len(rows), n_runs * n_logged * n_layers)
    for column in ("seed", "brake", "learning_rate", "step", "layer", "loss", "sink_mass",
                   "sink_rate", "top_source_weight", "top_source_uniform", "routing_entropy",
                   "hub_count", "effective_rank", "rank_collapse_residual", "key_norm_cv",
                   "norm_mass_correlation", "massive_activation_ratio"):
      self.assertIn(column, rows[0])
      float(rows[0][column])
    with open(os.path.join(workdir, "onsets.csv")) as f:
      onsets = list(csv.DictReader(f))
    self.assertLen(onsets, n_runs)
    self.assertIn("threshold", onsets[0])
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    self.assertEqual(summary["n_runs"], n_runs)
    for figure in ("phase_diagram", "onset_vs_brake", "final_metrics_vs_brake"):
      with open(os.path.join(workdir, "figures", f"{figure}.png"), "rb") as f:
        self.assertEqual(f.read(8), _PNG_MAGIC)


_BAD_FLAGS = {
    "unknown_key": (["--config.sweep.nope=1"], "unknown config key sweep.nope"),
    "misspelt_key": (["--config.train.stepz=3"],
                     "error: unknown config key train.stepz (did you mean train.steps?)"),
    "unknown_nested_key": ([f"--config={_ROOT}/configs/ssm.py:tiny", "--config.model.nope=1"],
                           "unknown config key"),
    "negative_brake": (["--config.sweep.brakes=(0.0,-0.1)"], "config.sweep.brakes"),
    "bad_type": (["--config.train.steps=many"], "config.train.steps"),
    "bad_router": (["--config.router=lstm"], "config.router"),
    "missing_config_file": (["--config=configs/nope.py"], "nope.py"),
    "unknown_preset": ([f"--config={_ROOT}/configs/attention.py:huge"], "unknown preset"),
}


class LauncherBadFlagsTest(parameterized.TestCase):
  """Each bad invocation (all launched concurrently) exits 2 with one error line, writing nothing."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    procs = {name: _launch(*flags, f"--workdir={cls._tmp.name}/{name}")
             for name, (flags, _) in _BAD_FLAGS.items()}
    help_proc = _launch("--help")
    cls.finished = {name: (p.wait(timeout=300), p.stderr.read()) for name, p in procs.items()}
    cls.help = (help_proc.wait(timeout=300), help_proc.stdout.read() + help_proc.stderr.read())

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @parameterized.parameters(*_BAD_FLAGS)
  def test_exits_2_with_one_line_and_writes_nothing(self, name):
    code, stderr = self.finished[name]
    self.assertEqual(code, 2, stderr)
    error_lines = [l for l in stderr.splitlines() if l.startswith("error:")]
    self.assertLen(error_lines, 1, stderr)
    self.assertIn(_BAD_FLAGS[name][1], error_lines[0])
    self.assertNotIn("\\n", error_lines[0])
    self.assertFalse(os.path.exists(os.path.join(self._tmp.name, name)))

  def test_help_lists_routers_presets_modes_and_config_keys(self):
    _, text = self.help  # absl's --help exits with status 1
    for word in ROUTERS + config_lib.PRESETS + config_lib.EXECUTION_MODES:
      self.assertIn(word, text)
    self.assertIn("rc_jax/config_lib.py", text)
    self.assertIn("--workdir=DIR [--config.KEY=VALUE]", text)  # usage line not run together


if __name__ == "__main__":
  absltest.main()

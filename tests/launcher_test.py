"""experiments/sweep.py end to end: every config's tiny preset, and bad flags."""

import csv
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest, parameterized
import pytest

from rc_jax.engine import config_lib, sweep

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
_LAUNCHER = os.path.join(_ROOT, "experiments", "sweep.py")
ROUTERS = ("attention", "graph", "ssm", "rwkv", "depth")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _launch(*flags):
  """The launcher in a new process; it shares the session's compilation cache (conftest)."""
  return subprocess.Popen([sys.executable, _LAUNCHER, *flags], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=_ROOT)


def _launch_forked(cases: list[list[str]], parallel: bool = False) -> list[tuple[int, str, str]]:
  """`(exit status, stdout, stderr)` of the launcher run once per case, each in its own process
  forked from one that imported the launcher's libraries once (`tests/launcher_forks.py`)."""
  with tempfile.TemporaryDirectory() as exchange:
    cases_path = os.path.join(exchange, "cases.json")
    out_path = os.path.join(exchange, "out.json")
    with open(cases_path, "w") as f:
      json.dump(cases, f)
    subprocess.run([sys.executable, os.path.join(_ROOT, "tests", "launcher_forks.py"), _LAUNCHER,
                    cases_path, out_path] + (["--parallel"] if parallel else []),
                   cwd=_ROOT, check=True, timeout=600)
    with open(out_path) as f:
      return [tuple(result) for result in json.load(f)]


@pytest.mark.slow
class LauncherTinyPresetsTest(parameterized.TestCase):
  """All five tiny sweeps run concurrently once, each its own launcher process; each test checks
  one workdir."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    results = _launch_forked([[f"--config={_ROOT}/configs/{r}.py:tiny",
                               f"--workdir={cls._tmp.name}/{r}"] for r in ROUTERS], parallel=True)
    cls.finished = dict(zip(ROUTERS, results))

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
    for line in ("devices: ", "compiling: 4 runs", "compiled in ", "chunk 1/2 (step 4/8): ",
                 "chunk 2/2 (step 8/8): ", "min/med/max"):
      self.assertIn(line, stderr)
    self.assertLess(stderr.index("compiling: 4 runs"), stderr.index("compiled in "))
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
                   "above_uniform_mass_count", "effective_rank", "rank_collapse_residual", "key_norm_cv",
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
    self.assertEqual(summary["environment"]["backend"], "cpu")
    for figure in ("phase_diagram", "onset_vs_brake", "final_metrics_vs_brake"):
      with open(os.path.join(workdir, "figures", f"{figure}.png"), "rb") as f:
        self.assertEqual(f.read(8), _PNG_MAGIC)


_BAD_FLAGS = {  # name: (flags, expected in the error line); {tmp} is the test's directory
    "unknown_key": (["--config.sweep.nope=1"], "unknown config key sweep.nope"),
    "unknown_key_suggestion": (["--config.train.stepz=3"],
                               "error: unknown config key train.stepz (did you mean train.steps?)"),
    "unknown_nested_key": ([f"--config={_ROOT}/configs/ssm.py:tiny", "--config.model.nope=1"],
                           "unknown config key model.nope"),
    "unknown_section": (["--config.trainn.steps=3"],
                        "unknown config key trainn (did you mean train?)"),
    "negative_brake": (["--config.sweep.brakes=(0.0,-0.1)"], "config.sweep.brakes"),
    "nan_brake": (["--config.sweep.brakes=(nan,0.0)"],
                  "config.sweep.brakes: every value must be finite and >= 0.0, got nan"),
    "bad_type": (["--config.train.steps=many"], "config.train.steps"),
    "bad_router": (["--config.router=lstm"], "config.router"),
    "missing_config_file": (["--config=configs/nope.py"], "nope.py"),
    "unknown_preset": ([f"--config={_ROOT}/configs/attention.py:huge"], "unknown preset"),
    "one_checkpoint_kept": ([f"--config={_ROOT}/configs/attention.py:tiny",
                             "--config.checkpoint.max_to_keep=1"],
                            "config.checkpoint.max_to_keep: must be >= 2"),
    "empty_workdir": ([f"--config={_ROOT}/configs/attention.py:tiny", "--workdir="],
                      "--workdir is empty"),
    "workdir_is_a_file": ([f"--config={_ROOT}/configs/attention.py:tiny",
                           "--workdir={tmp}/a_file"], "a_file exists and is not a directory"),
    "empty_text_file": ([f"--config={_ROOT}/configs/attention.py:tiny",
                         "--config.task.name=text_file", "--config.task.path={tmp}/empty.txt"],
                        "empty.txt' has 0 bytes, fewer than seq_len=16"),
    "short_text_file": ([f"--config={_ROOT}/configs/attention.py:tiny",
                         "--config.task.name=text_file", "--config.task.path={tmp}/short.txt"],
                        "short.txt' has 5 bytes, fewer than seq_len=16"),
    "grid_too_large": ([f"--config={_ROOT}/configs/attention.py:tiny",
                        f"--config.sweep.seeds={tuple(range(100))}",
                        f"--config.sweep.brakes={tuple(float(b) for b in range(100))}",
                        "--config.sweep.learning_rates="
                        f"{tuple(1e-3 + i * 1e-5 for i in range(100))}"],
                       "config.sweep (seeds x learning_rates x brakes): 1000000 runs exceed the "
                       "limit of 100000"),
    "bad_process_id": (["--num_processes=2", "--process_id=2"],
                       "process_id=2 must be < num_processes=2"),
}


@pytest.mark.slow
class LauncherBadFlagsTest(parameterized.TestCase):
  """Each bad invocation (its own launcher process) exits 2 with one error line, writing nothing."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    for name, content in (("a_file", "keep me"), ("empty.txt", ""), ("short.txt", "12345")):
      with open(os.path.join(cls._tmp.name, name), "w") as f:
        f.write(content)
    cls.before = sorted(os.listdir(cls._tmp.name))
    cases = []
    for name, (flags, _) in _BAD_FLAGS.items():
      flags = [flag.replace("{tmp}", cls._tmp.name) for flag in flags]
      if not any(flag.startswith("--workdir") for flag in flags):
        flags.append(f"--workdir={cls._tmp.name}/{name}")
      cases.append(flags)
    results = _launch_forked(cases + [["--help"]])
    cls.finished = {name: (code, stderr) for name, (code, _, stderr) in zip(_BAD_FLAGS, results)}
    code, stdout, stderr = results[-1]
    cls.help = (code, stdout + stderr)

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
    self.assertNotIn("Traceback", stderr)
    self.assertEqual(sorted(os.listdir(self._tmp.name)), self.before)
    with open(os.path.join(self._tmp.name, "a_file")) as f:
      self.assertEqual(f.read(), "keep me")

  def test_help_lists_routers_presets_modes_and_config_keys(self):
    _, text = self.help  # absl's --help exits with status 1
    for word in ROUTERS + config_lib.PRESETS + config_lib.EXECUTION_MODES:
      self.assertIn(word, text)
    self.assertIn("rc_jax/engine/config_lib.py", text)
    self.assertIn("--workdir=DIR [--config.KEY=VALUE]", text)  # usage line not run together


class LauncherReadOnlyWorkdirTest(absltest.TestCase):

  def test_read_only_workdir_is_one_error_line(self):
    if os.geteuid() == 0:
      self.skipTest("root writes into read-only directories (the in-process test patches "
                    "os.access instead)")
    with tempfile.TemporaryDirectory() as tmp:
      os.chmod(tmp, 0o555)
      try:
        proc = _launch(f"--config={_ROOT}/configs/attention.py:tiny", f"--workdir={tmp}/w")
        code, stderr = proc.wait(timeout=300), proc.stderr.read()
      finally:
        os.chmod(tmp, 0o755)
      self.assertEqual(code, 2, stderr)
      self.assertIn("is not writable", stderr)
      self.assertEqual(os.listdir(tmp), [])


# Moments of a sweep's life, each "when this path first exists" (None: at once), to kill it at.
_MOMENTS = {"start": None, "compiling": "config.json", "first checkpoint saved": "checkpoints/1",
            "saving the second checkpoint": "checkpoints/2.orbax-checkpoint-tmp*",
            "writing tables": "metrics.csv", "drawing figures": "figures",
            "writing the summary": "summary.json"}


@pytest.mark.slow
class LauncherKillAnywhereTest(absltest.TestCase):
  """SIGKILL at a moment drawn at random, rerun: the tables of an uninterrupted run, byte for byte,
  and no temporary file left behind."""

  def test_killed_at_a_random_moment_then_rerun(self):
    moment = random.choice(list(_MOMENTS))
    delay = random.uniform(0.0, 0.05)
    with tempfile.TemporaryDirectory() as tmp:
      reference = sweep.run_sweep(config_lib.base_config("attention", "tiny"),
                                  os.path.join(tmp, "reference"))
      workdir = os.path.join(tmp, "killed")
      flags = (f"--config={_ROOT}/configs/attention.py:tiny", f"--workdir={workdir}")
      proc = _launch(*flags)  # the module's cache: the rerun compiles nothing
      pattern = _MOMENTS[moment]
      while pattern and not glob.glob(os.path.join(workdir, pattern)) and proc.poll() is None:
        time.sleep(0.002)
      time.sleep(delay)
      proc.send_signal(signal.SIGKILL)
      proc.communicate()
      rerun = _launch(*flags)
      _, stderr = rerun.communicate(timeout=600)
      context = f"killed at '{moment}' + {delay:.3f}s: {stderr[-2000:]}"
      self.assertEqual(rerun.returncode, 0, context)
      for name in ("metrics", "onsets"):
        path = reference.paths[name]
        with open(path, "rb") as f, open(os.path.join(workdir, os.path.basename(path)), "rb") as g:
          self.assertEqual(g.read(), f.read(), context)
      leftovers = (glob.glob(os.path.join(workdir, ".*.tmp")) +
                   glob.glob(os.path.join(workdir, "figures", ".*.tmp")) +
                   glob.glob(os.path.join(workdir, "checkpoints", "*tmp*")))
      self.assertEqual(leftovers, [], context)


if __name__ == "__main__":
  absltest.main()

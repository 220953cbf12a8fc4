"""The persistent compilation cache: where it lives, and a resumed sweep that compiles nothing."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest, parameterized
import jax
import pytest

from rc_jax.engine import compile_cache

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs the tiny attention sweep in a fresh process with the cache in argv[1], once per
# "workdir:chunks" argument (stop after that many chunks; 0: to the end); prints the cache's hit and
# miss counts.
_CHILD = """
import json, sys
from jax import monitoring
counts = {"hits": 0, "misses": 0}
def on_event(name, **_):
  if name.startswith("/jax/compilation_cache/cache_"):
    key = name.rsplit("_", 1)[-1]
    counts[key] = counts.get(key, 0) + 1
monitoring.register_event_listener(on_event)
from rc_jax.engine import compile_cache, config_lib, sweep
compile_cache.enable(sys.argv[1])
for arg in sys.argv[2:]:
  workdir, stop = arg.rsplit(":", 1)
  sweep.run_sweep(config_lib.base_config("attention", "tiny"), workdir,
                  stop_after_chunks=int(stop) or None)
print("COUNTS " + json.dumps(counts))
"""


def _run_child(cache_dir: str, *runs: str) -> dict:
  # the sweep's own compiler options (no level in XLA_FLAGS); the emitter switch only makes the
  # compilation cheaper (conftest)
  env = dict(os.environ, PYTHONPATH=_ROOT, XLA_FLAGS="--xla_cpu_use_fusion_emitters=false",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _CHILD, cache_dir, *runs],
                        capture_output=True, text=True, env=env, cwd=_ROOT, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("COUNTS ")]
  assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
  return json.loads(lines[-1][len("COUNTS "):])


class ResolveTest(parameterized.TestCase):

  def test_default_is_the_user_cache(self):
    configured = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
      with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": "/x/cache"}, clear=False):
        os.environ.pop(compile_cache.ENV_VAR, None)
        self.assertEqual(compile_cache.resolve_dir(), "/x/cache/rc_jax/jax")
    finally:
      jax.config.update("jax_compilation_cache_dir", configured)

  def test_environment_variable_and_argument(self):
    with mock.patch.dict(os.environ, {compile_cache.ENV_VAR: "/from/env"}):
      self.assertEqual(compile_cache.resolve_dir(), "/from/env")
      self.assertEqual(compile_cache.resolve_dir("/from/flag"), "/from/flag")
      self.assertIsNone(compile_cache.resolve_dir("off"))

  @parameterized.parameters("", "off", "OFF", "none", "0", "false")
  def test_disabling_values(self, value):
    with mock.patch.dict(os.environ, {compile_cache.ENV_VAR: value}):
      self.assertIsNone(compile_cache.resolve_dir())


@pytest.mark.slow
class NewProcessTest(absltest.TestCase):

  def test_resuming_in_a_new_process_compiles_nothing(self):
    with tempfile.TemporaryDirectory() as tmp:
      cache = os.path.join(tmp, "cache")
      # the first process runs one sweep to the end and stops another after its first chunk
      done, paused = os.path.join(tmp, "done"), os.path.join(tmp, "paused")
      first = _run_child(cache, done + ":0", paused + ":1")
      self.assertGreater(first["misses"], 0)
      self.assertTrue(os.listdir(cache))
      resumed = _run_child(cache, paused + ":0")
    self.assertEqual(resumed["misses"], 0, resumed)
    self.assertGreater(resumed["hits"], 0)


if __name__ == "__main__":
  absltest.main()

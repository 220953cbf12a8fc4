"""Test-session setup before JAX starts: 4 fake CPU devices (for the sharding tests), XLA:CPU tuned
to compile the tests' small programs fast, and one persistent compilation cache for the session.

XLA:CPU: LLVM at -O0 (a third less compilation on tiny shapes; with a level in XLA_FLAGS the sweep's
programs no longer set their own) and the loop emitters instead of the fusion emitters (at -O0 a
third to a half less again: the tiny attention chunk 4.3 -> 2.6 s, the SSM's 9.6 -> 5.7 s). Neither
is for real sweeps: at the sweep's -O1 the emitter switch saves little and runs 5-60% slower."""

import atexit
import os
import shutil
import tempfile

for flag, value in (("--xla_force_host_platform_device_count", 4),
                    ("--xla_backend_optimization_level", 0),
                    ("--xla_cpu_use_fusion_emitters", "false")):
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# run_sweep turns on JAX's persistent compilation cache (~/.cache/rc_jax/jax by default). Tests
# leave the user's cache alone: the session gets a fresh one, shared by the pytest process, its
# xdist workers (they inherit the variable) and the launchers the tests start, so a program is
# compiled once per session; tests of the cache itself set their own directories.
if "RC_JAX_CACHE_DIR" not in os.environ:
  os.environ["RC_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="rc_jax_test_cache-")
  atexit.register(shutil.rmtree, os.environ["RC_JAX_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Tests marked slow first (the order is otherwise kept): under `-n auto --dist loadscope` the
  long end-to-end scopes start at once and the many short ones fill the workers in at the end."""
  del config
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)

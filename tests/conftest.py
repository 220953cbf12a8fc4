"""Test-session setup before JAX starts: 4 fake CPU devices (for the sharding tests), XLA:CPU's
LLVM at -O0 for the tests' own small programs (a third less compilation on tiny shapes; the sweep's
programs set their own level), and no persistent compilation cache unless a test asks for one."""

import os

for flag, value in (("--xla_force_host_platform_device_count", 4),
                    ("--xla_backend_optimization_level", 0)):
  if flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# run_sweep turns on JAX's persistent compilation cache (~/.cache/rc_jax/jax by default): tests
# leave the user's cache alone (those of a cache, or of a process resuming another, set their own)
os.environ.setdefault("RC_JAX_CACHE_DIR", "off")

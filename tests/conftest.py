"""Test-session setup: 4 fake CPU devices (for the sharding tests) before JAX starts."""

import os

_DEVICES_FLAG = "--xla_force_host_platform_device_count"
if _DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES_FLAG}=4".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# run_sweep turns on JAX's persistent compilation cache (~/.cache/rc_jax/jax by default): tests
# leave the user's cache alone and compile as a fresh machine would (compile_cache_test uses its own)
os.environ.setdefault("RC_JAX_CACHE_DIR", "off")

"""JAX's persistent compilation cache, on by default, so a new process does not recompile a sweep.

    compile_cache.enable()             # ~/.cache/rc_jax/jax, or $RC_JAX_CACHE_DIR
    compile_cache.enable("/scratch/c")  # another directory
    compile_cache.enable("off")         # disabled ("", "off", "none" or "0"; also via the env var)

Compiled XLA executables are stored under the directory, keyed by the program, the devices and the
jax/jaxlib versions; a rerun or a resumed sweep with the same config loads them instead of
compiling. Every program is cached, however short its compile
(`jax_persistent_cache_min_compile_time_secs = 0`), so a warm rerun compiles nothing at all.

Precedence: an explicit `path` argument (the launcher's `--compilation_cache_dir`), then
`$RC_JAX_CACHE_DIR`, then a directory the user already gave JAX (`jax_compilation_cache_dir` /
`$JAX_COMPILATION_CACHE_DIR`, left as it is), then `$XDG_CACHE_HOME/rc_jax/jax` (default
`~/.cache/rc_jax/jax`). It must run before the compilation it should cover; `run_sweep` calls
`enable()` itself, so library users get the cache too.

The cache is trusted code: keep the directory private to your user (see JAX's warning).
"""

from __future__ import annotations

import os

from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

ENV_VAR = "RC_JAX_CACHE_DIR"
_DISABLED = ("", "off", "none", "0", "false")
_state: dict[str, str | None] = {}  # "dir": the directory this process enabled (None: disabled)


def default_dir() -> str:
  """`$XDG_CACHE_HOME/rc_jax/jax`, `~/.cache/rc_jax/jax` when XDG_CACHE_HOME is unset."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "rc_jax", "jax")


def resolve_dir(path: str | None = None) -> str | None:
  """The directory `enable(path)` would use (None: disabled); see the module docstring."""
  if path is None:
    path = os.environ.get(ENV_VAR)
  if path is None:
    path = jax.config.jax_compilation_cache_dir or default_dir()
  return None if path.strip().lower() in _DISABLED else os.path.abspath(os.path.expanduser(path))


def enable(path: str | None = None) -> str | None:
  """Turns the persistent compilation cache on (or off) for this process; returns its directory.

  Args:
    path: cache directory; None: `$RC_JAX_CACHE_DIR`, else a directory already configured in JAX,
      else `default_dir()`. One of "", "off", "none", "0", "false" (any case) disables the cache.

  Returns:
    The directory in use, or None when disabled. Idempotent: once enabled, a call with `path=None`
    keeps the current directory.
  """
  if path is None and "dir" in _state:
    return _state["dir"]
  directory = resolve_dir(path)
  if directory is not None:
    try:
      os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
      logging.warning("compilation cache disabled: cannot create %s (%s)", directory, err)
      directory = None
  enabled = directory is not None
  if (enabled != jax.config.jax_enable_compilation_cache
      or (enabled and jax.config.jax_compilation_cache_dir != directory)):
    jax_cache.reset_cache()  # JAX decides once per cache object whether and where to cache
  jax.config.update("jax_enable_compilation_cache", enabled)
  if enabled:
    jax_cache.set_cache_dir(directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  _state["dir"] = directory
  logging.info("compilation cache: %s", directory or "disabled")
  return directory

"""Launches a sweep: seeds x brakes x learning rates in one compiled program.

    python experiments/sweep.py --config=configs/attention.py:cpu --workdir=runs/attention \
        [--config.sweep.brakes="(0.0,0.1)" --config.train.steps=2000 ...]

Writes config.json, metrics.csv, onsets.csv, summary.json and figures/ into the workdir; rerunning
with the same workdir resumes from the last checkpoint. Compiled programs are cached on disk
(`--compilation_cache_dir`, default ~/.cache/rc_jax/jax), so a rerun in a new process does not
recompile.
"""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rc_jax import compile_cache, config_lib, memory_plan, sweep

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs",
                               "attention.py")


def _default_workdir(config) -> str:
  return os.path.join("runs", config.router)


class _QuietOrbax(pylogging.Filter):
  """Drops Orbax's per-checkpoint INFO chatter; keeps its warnings and our progress lines."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "orbax" not in record.pathname


def _fail(err: Exception):
  """One error line (the first and, for a traceback, the last line of the message); exit code 2."""
  lines = [line for line in str(err).splitlines() if line.strip()] or [repr(err)]
  message = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"
  if isinstance(err, (KeyError, AttributeError)):
    message = f"unknown config key {message} in a --config.* override"
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing; a bad flag or config override exits with code 2 and one line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as err:
    _fail(err)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = _CONFIG.value
    config_lib.validate(config)
  except (OSError, ValueError) as err:
    _fail(err)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  compile_cache.enable(_CACHE_DIR.value)
  workdir = _WORKDIR.value or _default_workdir(config)
  logging.info("sweep of %d runs into %s", len(config_lib.run_grid(config)), workdir)
  try:
    result = sweep.run_sweep(config, workdir)
  except (sweep.WorkdirError, memory_plan.MemoryBudgetError) as err:
    _fail(err)
  summary = result.timings
  print(f"{len(result.runs)} runs done in {summary['total_s']:.1f}s "
        f"(compile + first chunk {summary['compile_init_s'] + summary['compile_chunk_s']:.1f}s)")
  for name, path in sorted(result.paths.items()):
    print(f"  {name}: {path}")


_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<router>).")
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    f"Persistent JAX compilation cache (default: ${compile_cache.ENV_VAR}, else "
    f"~/.cache/rc_jax/jax); 'off' disables it.")
try:  # config_flags reads --config.* overrides from sys.argv already while defining the flag
  _CONFIG = config_flags.DEFINE_config_file("config", f"{_DEFAULT_CONFIG}:cpu",
                                            "Sweep config file (and preset after ':').",
                                            lock_config=True)
except (KeyError, AttributeError, ValueError, TypeError) as define_error:
  _fail(define_error)

if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)

"""Launches a sweep: seeds x brakes x learning rates of one router, trained as one compiled program.

  python experiments/sweep.py --config=configs/ROUTER.py:PRESET --workdir=DIR [--config.KEY=VALUE]

Routers (configs/ROUTER.py; the brake is -beta * distance in log-routing space):
  attention  softmax attention LM on bigram-backcopy; distance = token lag i - j
  graph      graph attention node classifier on a stochastic block model; distance = hops
  ssm        selective SSM (Mamba S6) LM; an extra decay exp(-beta) per step
  rwkv       RWKV-style recurrent mixer LM; an extra decay per step added to the learned one
  depth      AttnRes, learned residuals routing over earlier sublayers; distance = depth lag l - i

Presets (after the colon, optionally followed by comma-separated variants, e.g. :cpu,prior; see
VARIANTS in rc_jax/engine/config_lib.py): tiny (test sizes, 8 steps), cpu (the default, minutes
on 2 CPU cores), gpu (the cpu model on 32x its tokens, for one accelerator), paper (accelerator
scale).

Execution modes (--config.execution.mode; the numbers agree to float32 rounding): auto (default:
vmap when the device's runs fit its memory budget, else map with the largest group that fits; see
rc_jax/engine/memory_plan.py), vmap (all of a device's runs batched), map (execution.chunk runs at a
time), sequential (one run at a time).

Config keys: every section and key is listed in the docstring of rc_jax/engine/config_lib.py
(router, model, task, train, sweep, execution, metrics, checkpoint, output). Override any key with
--config.SECTION.KEY=VALUE, e.g.
  --config.sweep.brakes="(0.0,0.1,1.0)" --config.train.steps=4000 --config.output.tensorboard=True

Writes config.json, metrics.csv, onsets.csv, summary.json and figures/ into the workdir (and
tensorboard/ with output.tensorboard). Rerunning with the same workdir resumes from the newest
intact checkpoint; rerunning a finished sweep rewrites nothing (--overwrite_outputs rewrites its
tables and figures); rerunning with a larger grid (more seeds, brakes or learning rates, nothing
else changed) trains only the new runs. Progress goes to stderr; --verbosity=-1 keeps only
warnings.

Several processes (hosts of a TPU slice, GPU nodes, or processes on one machine) run one sweep
together when started with the same flags plus the jax.distributed settings:

  python experiments/sweep.py ... --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0
  python experiments/sweep.py ... --distributed   # TPU slice, Slurm, Open MPI: auto-detected

(--process_id=1 in the other process; or the environment variables JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID). Only process 0 writes the config, tables and figures.

Compiled programs are cached on disk (--compilation_cache_dir, default ~/.cache/rc_jax/jax), so a
rerun or resume in a new process does not recompile.

Bad input prints one `error:` line, exits with status 2 and writes nothing.
"""

from __future__ import annotations

import logging as pylogging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rc_jax.engine import compile_cache, config_lib, distributed, progress, sweep

_DEFAULT_CONFIG = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                os.pardir, "configs", "attention.py"))


def _default_workdir(config) -> str:
  return os.path.join("runs", config.router)


class _WarningsOnly(pylogging.Filter):
  """Keeps WARNING and above: other libraries' INFO chatter (Orbax per checkpoint, JAX's probe
  of absent accelerator plugins such as libtpu.so) stays out of the terminal."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING


def _show_progress() -> None:
  """Progress lines (logger "rc_jax") as plain `HH:MM:SS message` lines on stderr; other
  libraries' INFO lines only when --verbosity is given."""
  verbosity = flags.FLAGS["verbosity"]
  logger = progress.LOGGER
  logger.addHandler(progress.plain_handler())
  logger.propagate = False
  logger.setLevel(pylogging.INFO if verbosity.value >= 0 else pylogging.WARNING)
  if not verbosity.present:
    logging.get_absl_handler().addFilter(_WarningsOnly())


def _override_path(name: str) -> str:
  """The dotted path up to `name` in the first --config.* override that mentions `name`."""
  for arg in sys.argv[1:]:
    if arg.startswith("--config."):
      parts = arg[len("--config."):].split("=", 1)[0].split(".")
      if name in parts:
        return ".".join(parts[:parts.index(name) + 1])
  return name


def _unknown_key(err: Exception) -> str:
  """`unknown config key train.stepz (did you mean train.steps?)` from ml_collections' errors."""
  while isinstance(err, (KeyError, AttributeError)) and err.args and \
      isinstance(err.args[0], BaseException):
    err = err.args[0]
  text = str(err.args[0]) if err.args else str(err)
  lookup = re.search(r"Attempting to lookup: (\S+)", text)
  if lookup:
    path = lookup.group(1)
    return f"unknown config key {path} ({path.rsplit('.', 1)[0]} has no fields)"
  name = re.match(r"\s*'?([^'\s]+)'?", text)
  if not name:
    return f"unknown config key in a --config.* override: {' '.join(text.split())}"
  path = _override_path(name.group(1))
  message = f"unknown config key {path}"
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  if suggestion:
    message += f" (did you mean {path.rsplit('.', 1)[0] + '.' if '.' in path else ''}"
    message += f"{suggestion.group(1)}?)"
  return message


def _fail(err: Exception | str):
  """One error line (the first and, for a traceback, the last line of the message); exit code 2."""
  if isinstance(err, (KeyError, AttributeError)):
    message = _unknown_key(err)
  else:
    lines = [line for line in str(err).splitlines() if line.strip()] or [repr(err)]
    message = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"
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
  if _WORKDIR.value is not None and not _WORKDIR.value.strip():
    _fail("--workdir is empty: give a directory, or leave the flag out for runs/<router>")
  try:
    config = _CONFIG.value
    config_lib.validate(config)
    settings = distributed.settings(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except (OSError, ValueError) as err:
    _fail(err)
  if _DISTRIBUTED.value or any(value is not None for value in settings.values()):
    try:
      distributed.initialize(**settings, auto=True)
    except (RuntimeError, ValueError) as err:
      _fail(f"jax.distributed.initialize failed: {err}")
  _show_progress()
  compile_cache.enable(_CACHE_DIR.value)
  workdir = _WORKDIR.value or _default_workdir(config)
  try:
    result = sweep.run_sweep(config, workdir, overwrite_outputs=_OVERWRITE.value)
  except (OSError, ValueError) as err:  # MemoryBudgetError, WorkdirError, bad data: ValueErrors
    _fail(err)
  if not distributed.is_main():
    return
  if result.already_complete:
    print(f"{workdir} already holds this finished sweep: nothing recomputed or rewritten "
          "(--overwrite_outputs rewrites its tables and figures)")
  else:
    timings = result.timings
    print(f"{len(result.runs)} runs done in {timings['total_s']:.1f}s (compiling "
          f"{timings['compile_s']:.1f}s)")
  diverged = [run["run"] for run in result.runs if run.get("status") == "diverged"]
  if diverged:
    print(f"{len(diverged)} of {len(result.runs)} runs diverged (frozen; status and "
          f"diverged_step in metrics.csv and summary.json): runs {diverged}")
  for name, path in sorted(result.paths.items()):
    print(f"  {name}: {path}")


_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<router>).")
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None,
    f"Persistent JAX compilation cache (default: ${compile_cache.ENV_VAR}, else "
    f"~/.cache/rc_jax/jax); 'off' disables it.")
_OVERWRITE = flags.DEFINE_bool("overwrite_outputs", False,
                               "Rewrite the tables and figures of an already finished sweep.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Start jax.distributed, detecting unset settings from the cluster (TPU "
    "slice, Slurm, Open MPI). Implied by any of the three flags below.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    f"host:port of process 0's coordinator (or ${distributed.ENV_COORDINATOR}).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"Processes in the sweep (or ${distributed.ENV_NUM_PROCESSES}).",
    lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None,
    f"This process's index, 0..num_processes-1 (or ${distributed.ENV_PROCESS_ID}).",
    lower_bound=0)
try:  # config_flags reads --config.* overrides from sys.argv already while defining the flag
  _CONFIG = config_flags.DEFINE_config_file("config", f"{_DEFAULT_CONFIG}:cpu",
                                            "Sweep config file (and preset after ':').",
                                            lock_config=True)
except (KeyError, AttributeError, ValueError, TypeError) as define_error:
  _fail(define_error)

if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)

"""Launches a sweep: seeds x brakes x learning rates of one router, trained as one compiled program.

  python experiments/sweep.py --config=configs/ROUTER.py:PRESET --workdir=DIR [--config.KEY=VALUE]

Routers (configs/ROUTER.py; the brake is -beta * distance in log-routing space):
  attention  softmax attention LM on bigram-backcopy; distance = token lag i - j
  graph      graph attention node classifier on a stochastic block model; distance = hops
  ssm        selective SSM (Mamba S6) LM; an extra decay exp(-beta) per step
  rwkv       RWKV-style recurrent mixer LM; an extra decay per step added to the learned one
  depth      AttnRes, learned residuals routing over earlier layers; distance = depth lag l - i

Presets (after the colon): tiny (test sizes, 8 steps), cpu (the default: 2 seeds x 8 brakes x 2000
steps, minutes on 2 CPU cores), paper (accelerator scale: 4 seeds x 16 brakes x 2 learning rates,
20k steps).

Execution modes (--config.execution.mode; the numbers are the same in each): vmap (default, all of
a device's runs batched), map (execution.chunk runs at a time, bounding memory), sequential (one
run at a time).

Config keys: every section and key is listed in the docstring of rc_jax/config_lib.py (router,
model, task, train, sweep, execution, metrics, checkpoint, output). Override any key with
--config.SECTION.KEY=VALUE, e.g.
  --config.sweep.brakes="(0.0,0.1,1.0)" --config.train.steps=4000 --config.output.tensorboard=True

Writes config.json, metrics.csv, onsets.csv, summary.json and figures/ into the workdir (and
tensorboard/ with output.tensorboard). Rerunning with the same workdir resumes from the last
checkpoint; with a larger grid (more seeds, brakes or learning rates, nothing else changed) it
trains only the new runs. Progress goes to stderr; --verbosity=-1 keeps only warnings.
"""

from __future__ import annotations

import logging as pylogging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rc_jax import config_lib, progress, sweep

_DEFAULT_CONFIG = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                                "configs", "attention.py"))


def _default_workdir(config) -> str:
  return os.path.join("runs", config.router)


class _WarningsOnly(pylogging.Filter):
  """Keeps WARNING and above: other libraries' INFO chatter (Orbax per checkpoint, JAX's probe
  of absent accelerator plugins such as libtpu.so) stays out of the terminal."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING


def _override_paths(argv) -> list[str]:
  """Dotted key paths of the `--config.a.b=...` overrides in `argv`."""
  return [m.group(1) for arg in argv for m in [re.match(r"--config\.([\w.]+)", arg)] if m]


def _unknown_key_message(err: Exception, argv) -> str:
  """`unknown config key train.stepz (did you mean train.steps?)` from ml_collections' error."""
  while isinstance(err, (KeyError, AttributeError)) and err.args and isinstance(err.args[0],
                                                                                Exception):
    err = err.args[0]
  text = str(err.args[0]) if err.args else str(err)
  lookup = re.search(r"Attempting to lookup: ([\w.]+)", text)
  if lookup:
    path = lookup.group(1)
    return f"unknown config key {path} ({path.rsplit('.', 1)[0]} is a value, not a section)"
  name = re.match(r"'?(\w+)'?", text.strip("'\""))
  suggestion = re.search(r'Did you mean "(\w+)"', text)
  name = name.group(1) if name else text
  for path in _override_paths(argv):
    parts = path.split(".")
    if name in parts:
      index = parts.index(name)
      key = ".".join(parts[:index + 1])
      if suggestion:
        fixed = ".".join(parts[:index] + [suggestion.group(1)])
        return f"unknown config key {key} (did you mean {fixed}?)"
      return f"unknown config key {key}"
  return f"unknown config key {name}"


def _fail(err: Exception):
  """One error line (the first and, for a traceback, the last line of the message); exit code 2."""
  if isinstance(err, (KeyError, AttributeError)):
    message = _unknown_key_message(err, sys.argv)
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = _CONFIG.value
    config_lib.validate(config)
  except (OSError, ValueError) as err:
    _fail(err)
  _show_progress()
  workdir = _WORKDIR.value or _default_workdir(config)
  try:
    result = sweep.run_sweep(config, workdir)
  except sweep.WorkdirError as err:
    _fail(err)
  summary = result.timings
  print(f"{len(result.runs)} runs done in {summary['total_s']:.1f}s "
        f"(compile + first chunk {summary['compile_init_s'] + summary['compile_chunk_s']:.1f}s)")
  for name, path in sorted(result.paths.items()):
    print(f"  {name}: {path}")


_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<router>).")
try:  # config_flags reads --config.* overrides from sys.argv already while defining the flag
  _CONFIG = config_flags.DEFINE_config_file("config", f"{_DEFAULT_CONFIG}:cpu",
                                            "Sweep config file (and preset after ':').",
                                            lock_config=True)
except (KeyError, AttributeError, ValueError, TypeError) as define_error:
  _fail(define_error)

if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)

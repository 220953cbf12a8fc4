"""Refusing a sweep grid too large to run, before anything is written.

A sweep holds every run's training state (parameters and Adam moments) on the devices, its logs
on the host, and writes checkpoints and a tidy table to disk. `check_grid` estimates those from
the shapes of one run (`jax.eval_shape` of `Trainer.init`) and raises ValueError naming
`config.sweep` when

  - the grid has more than `MAX_RUNS` runs (a sanity bound: split such a grid into sweeps);
  - twice the run-batched state on one device (state + its update) exceeds that device's memory
    (`memory_stats()["bytes_limit"]`; CPU devices share host RAM, split evenly between them);
  - twice the log history (history + the copy a chunk's logs are appended to) exceeds half the
    host's RAM;
  - checkpoints (`max_to_keep + 1` of them, each counted as 1.5x its state and logs: Orbax's
    files of 4 tiny runs take 1.3x the raw bytes, mostly metadata) plus metrics.csv (about 12
    bytes a cell) exceed the free disk space under the workdir.

Activations are not counted (XLA's memory analysis sees them; this is the cheap first guard).
"""

from __future__ import annotations

import math
import os
import shutil

import jax
import numpy as np

MAX_RUNS = 100_000
_CSV_BYTES_PER_CELL = 12
_RUN_COLUMNS = 8  # run, seed, brake, learning_rate, status, diverged_step, step, layer


def _nbytes(tree) -> int:
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _gib(n: float) -> str:
  """Bytes in the largest binary unit that keeps the number >= 1 ("1.5 GiB", "12 KiB")."""
  for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
    if n >= 2 ** (10 * power):
      return f"{n / 2 ** (10 * power):.3g} {unit}"
  return f"{n:.0f} B"


def device_memory_bytes() -> int:
  """Memory of one local device: its allocator limit, else host RAM / local device count."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  return host_memory_bytes() // max(1, len(jax.local_devices()))


def host_memory_bytes() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk_bytes(path: str) -> int:
  """Free bytes on the file system of `path` (or of its nearest existing ancestor)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def check_grid(n_runs: int, n_devices: int, state_per_run, logs_per_step, n_logged: int, *,
               max_to_keep: int, workdir: str, device_bytes: int | None = None,
               host_bytes: int | None = None, disk_bytes: int | None = None) -> None:
  """Raises ValueError naming config.sweep if the grid does not fit (see module docstring).

  Args:
    n_runs, n_devices: the grid's run count and the devices its run axis is sharded over.
    state_per_run: one run's TrainState (arrays or ShapeDtypeStructs).
    logs_per_step: one run's logs at one logged step (`{name: [] or [L]}`).
    n_logged: logged steps per run.
    max_to_keep: checkpoints kept.
    workdir: where checkpoints and tables go (its file system's free space is checked).
    device_bytes, host_bytes, disk_bytes: override the measured capacities (tests).
  """
  where = "config.sweep (seeds x learning_rates x brakes)"
  if n_runs > MAX_RUNS:
    raise ValueError(f"{where}: {n_runs} runs exceed the limit of {MAX_RUNS} per sweep; split the "
                     "grid into several sweeps")
  per_device = -(-n_runs // n_devices)
  state_run = _nbytes(state_per_run)
  device_bytes = device_memory_bytes() if device_bytes is None else device_bytes
  if 2 * per_device * state_run > device_bytes:
    raise ValueError(f"{where}: {n_runs} runs need {_gib(2 * per_device * state_run)} per device "
                     f"for training state and its update ({per_device} runs x "
                     f"{_gib(state_run)} x 2 on each of {n_devices} devices), more than "
                     f"a device's {_gib(device_bytes)}; use fewer runs or more devices")
  logs_step = _nbytes(logs_per_step)
  logs_total = n_runs * n_logged * logs_step
  host_bytes = host_memory_bytes() if host_bytes is None else host_bytes
  if 2 * logs_total > host_bytes // 2:
    raise ValueError(f"{where}: {n_runs} runs x {n_logged} logged steps need "
                     f"{_gib(2 * logs_total)} of host memory for their logs, more than half of the "
                     f"host's {_gib(host_bytes)}; log less often (train.log_every) or use fewer "
                     "runs")
  n_layers = max([math.prod(x.shape) for x in jax.tree.leaves(logs_per_step)] + [1])
  n_columns = _RUN_COLUMNS + len(jax.tree.leaves(logs_per_step))
  csv_bytes = n_runs * n_logged * n_layers * n_columns * _CSV_BYTES_PER_CELL
  checkpoint_bytes = int(1.5 * (max_to_keep + 1) * (n_runs * state_run + logs_total))
  disk_bytes = free_disk_bytes(workdir) if disk_bytes is None else disk_bytes
  if csv_bytes + checkpoint_bytes > disk_bytes:
    raise ValueError(f"{where}: {n_runs} runs need about {_gib(csv_bytes + checkpoint_bytes)} on "
                     f"disk (checkpoints {_gib(checkpoint_bytes)}, metrics.csv {_gib(csv_bytes)}), "
                     f"more than the {_gib(disk_bytes)} free under {workdir}")

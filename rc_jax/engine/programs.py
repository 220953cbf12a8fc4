"""The jitted programs of a sweep: one trainer's init and chunk, vmapped over the runs of each
device and sharded over devices, built per execution (vmap, map of groups, sequential) and compiled
for abstract inputs. Shared by `sweep` (which runs them) and `memory_plan` (which compiles them to
read XLA's memory analysis), so a program compiled for a plan's probe is not compiled again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from rc_jax.engine.train import Trainer, make_train

# config sections that never change the numbers
FREE_SECTIONS = ("execution", "checkpoint", "output")


def config_fingerprint(config, exclude: tuple[str, ...] = ()) -> str:
  """Hash of everything that determines the numbers (`FREE_SECTIONS` and `exclude` left out)."""
  exclude = FREE_SECTIONS + tuple(exclude)
  relevant = {k: v for k, v in config.to_dict().items() if k not in exclude}
  return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def layout(n_runs: int, n_devices: int) -> tuple[int, int]:
  """`(runs per device, padded run count)` for `n_runs` runs over `n_devices` devices."""
  per_device = -(-n_runs // n_devices)
  return per_device, per_device * n_devices


def _execute(fn: Callable, mode: str, group: int) -> Callable:
  """Maps `fn` over the per-device run axis (axis 0 of every argument) per `mode`."""
  if mode == "vmap":
    return jax.vmap(fn)
  batch_size = group if mode == "map" else None
  return lambda *args: jax.lax.map(lambda a: fn(*a), args, batch_size=batch_size)


class CompiledSweep(NamedTuple):
  init: Callable    # (key_data [n_dev, per_dev, 2], hparams) -> (state, logs)
  chunk: Callable   # (state, hparams) -> (state, logs [n_dev, per_dev, blocks, ...])
  sharding: jax.sharding.NamedSharding
  execution: str    # how the chunk executes runs: "vmap", "map(chunk=G)" or "sequential"
  plan: str = ""    # execution "auto": the memory plan behind the choice (`MemoryPlan.describe`)


_TRAINERS: dict[str, Trainer] = {}


def trainer_for(config) -> Trainer:
  """`make_train(config)`, cached per config but its grid (reads the task's data: may raise
  ValueError)."""
  key = config_fingerprint(config, exclude=("sweep",))
  if key not in _TRAINERS:
    _TRAINERS[key] = make_train(config)
  return _TRAINERS[key]


# XLA:CPU options unless XLA_FLAGS sets the level: LLVM at -O1 instead of the default (~35% less
# compilation, the same steady-state speed: the dots run in library kernels); the init program runs
# once: -O0 (a third less compilation, 0.2 s slower). Not `xla_cpu_experimental_ynn_fusion_type=
# LIBRARY_FUSION_TYPE_DOT`: with it the first execution of the attention cpu preset's 16 vmapped
# runs hung in XLA (jaxlib 0.10.2, 2 cores; 0% CPU, the main thread waiting for the result), twice
# in two tries; without it the same sweep runs. Nor `xla_cpu_use_fusion_emitters=false` (the
# tests' choice at -O0): at -O1 it saves 0-25% of the compilation and runs the cpu preset's
# 16-run chunk slower (200 steps: attention 10.5 -> 11.0 s, ssm 12.5 -> 16.1 s, graph 1.5 -> 2.5 s).
_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
_CPU_INIT_COMPILER_OPTIONS = dict(_CPU_COMPILER_OPTIONS, xla_backend_optimization_level=0)


class SweepPrograms(NamedTuple):
  """`build(mode, group)` -> CompiledSweep (memoised); `compile_chunk(program, runs_per_device)` /
  `compile_init(...)` -> that function lowered and compiled for abstract inputs of that many runs
  per device (the jitted function itself, so the later call with real inputs reuses the
  executable)."""

  build: Callable[[str, int], CompiledSweep]
  compile_chunk: Callable[[CompiledSweep, int], Any]
  compile_init: Callable[[CompiledSweep, int], Any]


def program_builders(trainer: Trainer, devices) -> SweepPrograms:
  """The sweep's jitted programs for `devices` (see `SweepPrograms`)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
  own_level = "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")
  options, init_options = ((_CPU_COMPILER_OPTIONS, _CPU_INIT_COMPILER_OPTIONS)
                           if devices[0].platform == "cpu" and own_level else (None, None))

  def init_one(key_data, hparams):
    return trainer.init(jax.random.wrap_key_data(key_data), hparams)

  @functools.lru_cache(maxsize=None)
  def build(mode: str, group: int) -> CompiledSweep:
    init = jax.jit(jax.vmap(_execute(init_one, mode, group)), out_shardings=sharding,
                   compiler_options=init_options)
    chunk = jax.jit(jax.vmap(_execute(trainer.chunk, mode, group)), out_shardings=sharding,
                    donate_argnums=(0,), compiler_options=options)
    label = f"map(chunk={group})" if mode == "map" else mode
    return CompiledSweep(init=init, chunk=chunk, sharding=sharding, execution=label)

  def init_args(runs_per_device: int):
    shaped = lambda shape, dtype: jax.ShapeDtypeStruct((len(devices), runs_per_device) + shape,
                                                       dtype, sharding=sharding)
    hparams = {name: shaped((), value.dtype) for name, value in hparams_of([]).items()}
    return shaped((2,), np.uint32), hparams

  def compile_init(program: CompiledSweep, runs_per_device: int):
    return program.init.lower(*init_args(runs_per_device)).compile()

  def compile_chunk(program: CompiledSweep, runs_per_device: int):
    key_data, hparams = init_args(runs_per_device)
    state = jax.eval_shape(program.init, key_data, hparams)[0]
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    return program.chunk.lower(state, hparams).compile()

  return SweepPrograms(build, compile_chunk, compile_init)


@functools.lru_cache(maxsize=None)
def builders_for(trainer: Trainer, devices: tuple) -> SweepPrograms:
  """`program_builders(trainer, devices)`, one per (trainer, devices) in this process: sweeps of one
  trainer share its jitted programs, so a program compiled for a shape (a plan's probe included) is
  not compiled again."""
  return program_builders(trainer, list(devices))


def hparams_of(runs: list[dict]) -> dict[str, np.ndarray]:
  """The runs' traced hyperparameters `{"brake": [R], "learning_rate": [R]}` (float32)."""
  return {"brake": np.array([r["brake"] for r in runs], np.float32),
          "learning_rate": np.array([r["learning_rate"] for r in runs], np.float32)}


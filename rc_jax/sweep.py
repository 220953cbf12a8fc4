"""The sweep engine: seeds x grid -> one run axis -> one compiled, sharded, checkpointed program.

    result = run_sweep(config, workdir)

The run axis (padded to a multiple of the device count) is laid out `[n_devices, runs_per_device]`
and sharded over a 1-D `Mesh` with an Auto `'runs'` axis. Within a device, `config.execution.mode`
decides how runs execute — the numbers are the same in every mode:

  auto        (default) `vmap` if XLA's memory analysis of that program fits the device's memory
              budget, else `map` with the largest group that fits; on CPU also groups small enough
              for the cache (`rc_jax.memory_plan`);
  vmap        all of the device's runs batched (`jax.vmap`): best on accelerators;
  map         `lax.map` over groups of `execution.chunk` vmapped runs: bounded memory;
  sequential  `lax.map` one run at a time, still one compiled program.

Training proceeds in chunks of `train.chunk_steps`: a Python loop over one jitted chunk function,
an Orbax checkpoint (run-batched state, logs so far, JSON metadata) after each chunk, and resumption
from the latest complete checkpoint when rerun with the same workdir and config.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rc_jax import compile_cache, config_lib, memory_plan, outputs
from rc_jax.train import Trainer, make_train


class SweepResult(NamedTuple):
  runs: list[dict]
  logs: dict[str, np.ndarray]   # [R, K] or [R, K, L], host arrays, padding removed
  state: Any                    # final run-batched TrainState, [n_devices, runs_per_device, ...]
  paths: dict[str, str]         # output files written
  timings: dict[str, float]     # compile_init_s; compile_chunk_s (first chunk run by this call,
                                # compilation included); train_s (the other chunks); total_s


def config_fingerprint(config) -> str:
  """Hash of everything that determines the numbers (execution strategy excluded)."""
  relevant = {k: v for k, v in config.to_dict().items() if k not in ("execution", "checkpoint")}
  return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _layout(n_runs: int, n_devices: int) -> tuple[int, int]:
  per_device = -(-n_runs // n_devices)
  return per_device, per_device * n_devices


def _pad_and_shape(x: np.ndarray, n_devices: int, per_device: int) -> np.ndarray:
  """`[R, ...]` -> `[n_devices, per_device, ...]`, padding by repeating the last run."""
  pad = n_devices * per_device - x.shape[0]
  x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
  return x.reshape((n_devices, per_device) + x.shape[1:])


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


_COMPILED: dict[tuple, tuple[Trainer, CompiledSweep]] = {}


def compiled_for(config, devices=None) -> tuple[Trainer, CompiledSweep]:
  """`(trainer, compile_sweep(trainer, ...))`, cached per (config, execution, devices) in this process,
  so a resumed or repeated sweep reuses the compiled programs."""
  devices = tuple(jax.devices() if devices is None else devices)
  cache_key = (config_fingerprint(config), json.dumps(config.execution.to_dict(), sort_keys=True),
               tuple(d.id for d in devices))
  if cache_key not in _COMPILED:
    trainer = make_train(config)
    _COMPILED[cache_key] = (trainer, compile_sweep(trainer, config, devices))
  return _COMPILED[cache_key]


# XLA:CPU options (measured in benchmarks/RESULTS.md): LLVM at -O1 instead of the default (~35%
# less compilation, the same steady-state speed: the dots run in library kernels), and YNNPACK for
# dots only (its reduction fusions made a 16-run vmapped width-64 step 25% slower). The init program
# runs once: -O0 (a third less compilation, 0.2 s slower).
_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1,
                         "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
_CPU_INIT_COMPILER_OPTIONS = dict(_CPU_COMPILER_OPTIONS, xla_backend_optimization_level=0)


class SweepPrograms(NamedTuple):
  """`build(mode, group)` -> CompiledSweep (memoised); `compile_chunk(program, runs_per_device)` /
  `compile_init(...)` -> that function lowered and compiled for abstract inputs of that many runs per
  device (the jitted function itself, so the later call with real inputs reuses the executable)."""

  build: Callable[[str, int], CompiledSweep]
  compile_chunk: Callable[[CompiledSweep, int], Any]
  compile_init: Callable[[CompiledSweep, int], Any]


def program_builders(trainer: Trainer, devices) -> SweepPrograms:
  """The sweep's jitted programs for `devices` (see `SweepPrograms`)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
  cpu = devices[0].platform == "cpu"
  options, init_options = (_CPU_COMPILER_OPTIONS, _CPU_INIT_COMPILER_OPTIONS) if cpu else (None, None)

  def init_one(key_data, hparams):
    return trainer.init(jax.random.wrap_key_data(key_data), hparams)

  @functools.lru_cache(maxsize=None)
  def build(mode: str, group: int) -> CompiledSweep:
    init = jax.jit(jax.vmap(_execute(init_one, mode, group)), out_shardings=sharding,
                   compiler_options=init_options)
    chunk = jax.jit(jax.vmap(_execute(trainer.chunk, mode, group)), out_shardings=sharding,
                    donate_argnums=(0,), compiler_options=options)
    return CompiledSweep(init=init, chunk=chunk, sharding=sharding)

  def init_args(runs_per_device: int):
    shaped = lambda shape, dtype: jax.ShapeDtypeStruct((len(devices), runs_per_device) + shape,
                                                       dtype, sharding=sharding)
    hparams = {name: shaped((), value.dtype) for name, value in _hparams([]).items()}
    return shaped((2,), np.uint32), hparams

  def compile_init(program: CompiledSweep, runs_per_device: int):
    return program.init.lower(*init_args(runs_per_device)).compile()

  def compile_chunk(program: CompiledSweep, runs_per_device: int):
    key_data, hparams = init_args(runs_per_device)
    state = jax.eval_shape(program.init, key_data, hparams)[0]
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
    return program.chunk.lower(state, hparams).compile()

  return SweepPrograms(build, compile_chunk, compile_init)


def compile_sweep(trainer: Trainer, config, devices=None) -> CompiledSweep:
  """jit(vmap over devices(execute over runs(trainer fn))) with the run axis sharded, compiled: the
  init program in a background thread while the chunk compiles (XLA releases the GIL, so the two
  compile side by side). In "auto" mode `memory_plan.choose` picks the execution."""
  devices = list(jax.devices() if devices is None else devices)
  programs = program_builders(trainer, devices)
  per_device, _ = _layout(len(config_lib.run_grid(config)), len(devices))
  mode = config.execution.mode
  program = programs.build("vmap" if mode == "auto" else mode,
                           per_device if mode == "auto" else config.execution.chunk)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    init_compiled = pool.submit(programs.compile_init, program, per_device)
    if mode == "auto":
      budget, source = memory_plan.budget_bytes(devices, config.execution.memory_budget_gib)
      cache = memory_plan.CPU_GROUP_BYTES if devices[0].platform == "cpu" else None
      program = memory_plan.choose(programs.build, programs.compile_chunk, per_device, budget,
                                   source, cache_bytes=cache).program
    else:
      programs.compile_chunk(program, per_device)
    init_compiled.result()
  return program


def _hparams(runs: list[dict]) -> dict[str, np.ndarray]:
  return {"brake": np.array([r["brake"] for r in runs], np.float32),
          "learning_rate": np.array([r["learning_rate"] for r in runs], np.float32)}


def _key_data(runs: list[dict]) -> np.ndarray:
  return np.stack([np.asarray(jax.random.key_data(jax.random.key(r["seed"]))) for r in runs])


def _unlayout(tree, n_runs: int):
  """`[n_dev, per_dev, ...]` device arrays -> host `[R, ...]` with the padding dropped."""
  def one(x):
    x = np.asarray(x)
    return x.reshape((-1,) + x.shape[2:])[:n_runs]
  return jax.tree.map(one, tree)


def _checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint.max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


class WorkdirError(ValueError):
  """A workdir that cannot be resumed: checkpoints of another config or layout, or unreadable."""


def _unreadable(manager: ocp.CheckpointManager, step: int, err: Exception) -> WorkdirError:
  reason = (str(err).strip().splitlines() or [""])[0][:200]
  return WorkdirError(
      f"checkpoint {os.path.join(str(manager.directory), str(step))} is unreadable "
      f"({type(err).__name__}: {reason}); delete that directory to resume from an earlier "
      f"checkpoint, or use a fresh --workdir")


def _check_resumable(manager: ocp.CheckpointManager, step: int, fingerprint: str,
                     n_devices: int) -> None:
  try:
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    saved_fingerprint, saved_devices = meta["fingerprint"], meta["devices"]
  except Exception as err:  # pylint: disable=broad-except  (any corruption is reported alike)
    raise _unreadable(manager, step, err) from err
  if saved_fingerprint != fingerprint:
    raise WorkdirError(
        f"{manager.directory} holds checkpoints of a different config (fingerprint "
        f"{saved_fingerprint} != {fingerprint}); use a fresh --workdir")
  if saved_devices != n_devices:
    raise WorkdirError(
        f"{manager.directory} was written sharded over {saved_devices} devices, this process has "
        f"{n_devices}; resume with the same device count or use a fresh --workdir")


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        logs=ocp.args.StandardRestore(),
        meta=ocp.args.JsonRestore()))
  except Exception as err:  # pylint: disable=broad-except
    raise _unreadable(manager, step, err) from err
  logs = {name: np.asarray(value) for name, value in restored.logs.items()}
  return restored.state, logs, restored.meta["chunks_done"]


def run_sweep(config, workdir: str, *, stop_after_chunks: int | None = None,
              devices=None) -> SweepResult:
  """Trains every run of `config`'s grid, writing checkpoints and outputs under `workdir`.

  Args:
    config: a validated sweep config (`config_lib.validate`).
    workdir: output directory; resumes from `workdir/checkpoints` if it holds a checkpoint of the
      same config (else `WorkdirError`, also for an unreadable checkpoint).
    stop_after_chunks: stop (after checkpointing) once this many chunks are done in total; outputs
      are then not written. For pausing long sweeps, and for tests of resumption.
    devices: devices to shard the run axis over (default: all).

  Returns:
    SweepResult (logs and paths empty when stopped early).
  """
  config_lib.validate(config)
  t_start = time.perf_counter()
  compile_cache.enable()
  runs = config_lib.run_grid(config)
  trainer, compiled = compiled_for(config, devices)  # may refuse a grid that does not fit
  fingerprint = config_fingerprint(config)
  manager = _checkpoint_manager(workdir, config)
  latest = manager.latest_step()
  if latest is not None:
    _check_resumable(manager, latest, fingerprint, len(jax.devices() if devices is None else devices))
  with outputs.atomic_open(os.path.join(workdir, "config.json")) as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)

  n_devices = compiled.sharding.mesh.size
  per_device, _ = _layout(len(runs), n_devices)
  shard = lambda x: jax.device_put(_pad_and_shape(x, n_devices, per_device), compiled.sharding)
  hparams = jax.tree.map(shard, _hparams(runs))
  key_data = shard(_key_data(runs))
  timings = {"compile_init_s": 0.0, "compile_chunk_s": 0.0, "train_s": 0.0}

  if latest is None:
    t0 = time.perf_counter()
    state, first = compiled.init(key_data, hparams)
    history = {name: value[:, None] for name, value in _unlayout(first, len(runs)).items()}
    timings["compile_init_s"] = time.perf_counter() - t0
    chunks_done = 0
  else:
    abstract = jax.eval_shape(compiled.init, key_data, hparams)[0]
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=compiled.sharding), abstract)
    state, history, chunks_done = _restore(manager, latest, abstract)
    logging.info("resumed %s from chunk %d/%d", workdir, chunks_done, trainer.n_chunks)

  last_chunk = trainer.n_chunks if stop_after_chunks is None else min(stop_after_chunks,
                                                                      trainer.n_chunks)
  for chunk_index in range(chunks_done, last_chunk):
    t0 = time.perf_counter()
    state, chunk_logs = compiled.chunk(state, hparams)
    chunk_logs = _unlayout(chunk_logs, len(runs))
    elapsed = time.perf_counter() - t0
    timings["compile_chunk_s" if chunk_index == chunks_done else "train_s"] += elapsed
    history = {name: np.concatenate([history[name], chunk_logs[name]], axis=1) for name in history}
    manager.save(chunk_index + 1, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), logs=ocp.args.StandardSave(history),
        meta=ocp.args.JsonSave({"fingerprint": fingerprint, "chunks_done": chunk_index + 1,
                                "devices": n_devices})))
    logging.info("step %d/%d | %d runs | %.0f run-steps/s | ETA %.0fs",
                 (chunk_index + 1) * config.train.chunk_steps, config.train.steps, len(runs),
                 len(runs) * config.train.chunk_steps / elapsed,
                 (trainer.n_chunks - chunk_index - 1) * elapsed)
  manager.wait_until_finished()
  manager.close()

  if history["step"].shape[1] < len(trainer.logged_steps):  # stopped early: no outputs yet
    return SweepResult(runs, {}, state, {}, timings)
  timings["total_s"] = time.perf_counter() - t_start
  onset = {"metric": config.metrics.onset_metric, "threshold": config.metrics.onset_threshold,
           "layer_reduce": config.metrics.onset_layer_reduce}
  extra = {"timings": timings, "devices": n_devices, "execution": config.execution.to_dict(),
           "fingerprint": fingerprint}
  paths = outputs.write_all(workdir, runs, history, onset, extra)
  return SweepResult(runs, history, state, paths, timings)


def single_run(trainer: Trainer, seed: int, hparams: dict):
  """One run alone, jitted: `trainer.train(key(seed), hparams)` (the reference for a sweep's run)."""
  hparams = {k: jnp.float32(v) for k, v in hparams.items()}
  return jax.jit(trainer.train)(jax.random.key(seed), hparams)

"""The sweep engine: seeds x grid -> one run axis -> one compiled, sharded, checkpointed program.

    result = run_sweep(config, workdir)

The run axis (padded to a multiple of the device count) is laid out `[n_devices, runs_per_device]`
and sharded over a 1-D `Mesh` with an Auto `'runs'` axis. Within a device, `config.execution.mode`
decides how runs execute — the numbers are the same in every mode:

  vmap        all of the device's runs batched (`jax.vmap`): best on accelerators;
  map         `lax.map` over groups of `execution.chunk` vmapped runs: bounded memory;
  sequential  `lax.map` one run at a time, still one compiled program.

Training proceeds in chunks of `train.chunk_steps`: a Python loop over one jitted chunk function,
an Orbax checkpoint (run-batched state, logs so far, JSON metadata) after each chunk, and resumption
from the latest complete checkpoint when rerun with the same workdir and config. Rerun with a larger
grid, a workdir keeps its finished runs and trains only the new ones (`rc_jax.grid`). Progress goes
to the "rc_jax" logger (`rc_jax.progress`); with `config.output.tensorboard`, per-run TensorBoard
curves to `workdir/tensorboard` (`rc_jax.tensorboard`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rc_jax import config_lib, grid, outputs, progress, tensorboard
from rc_jax.grid import WorkdirError
from rc_jax.train import Trainer, make_train


class SweepResult(NamedTuple):
  runs: list[dict]
  logs: dict[str, np.ndarray]   # [R, K] or [R, K, L], host arrays, padding removed
  state: Any                    # final run-batched TrainState, [n_devices, runs_per_device, ...]
  paths: dict[str, str]         # output files written
  timings: dict[str, float]     # compile_init_s; compile_chunk_s (first chunk run by this call,
                                # compilation included; summed over the parts of a grown
                                # workdir); train_s (the other chunks); total_s


def config_fingerprint(config) -> str:
  """Hash of everything that determines the numbers (execution, checkpoint, output excluded)."""
  return grid.fingerprint(config)


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


def compile_sweep(trainer: Trainer, config, devices=None) -> CompiledSweep:
  """jit(vmap over devices(execute over runs(trainer fn))) with the run axis sharded."""
  devices = jax.devices() if devices is None else devices
  mesh = jax.sharding.Mesh(np.asarray(devices), ("runs",),
                           axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
  mode, group = config.execution.mode, config.execution.chunk

  def init_one(key_data, hparams):
    return trainer.init(jax.random.wrap_key_data(key_data), hparams)

  init = jax.jit(jax.vmap(_execute(init_one, mode, group)), out_shardings=sharding)
  chunk = jax.jit(jax.vmap(_execute(trainer.chunk, mode, group)), out_shardings=sharding,
                  donate_argnums=(0,))
  return CompiledSweep(init=init, chunk=chunk, sharding=sharding)


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


class _PartResult(NamedTuple):
  runs: list[dict]
  history: dict[str, np.ndarray]   # [R, K(, L)] host logs so far
  state: Any
  timings: dict[str, float]
  n_devices: int
  sharding: jax.sharding.NamedSharding
  complete: bool


def _open_part(part: grid.Part, n_devices: int):
  """The part's checkpoint manager and latest step, checked resumable."""
  manager = _checkpoint_manager(part.workdir, part.config)
  latest = manager.latest_step()
  if latest is not None:
    _check_resumable(manager, latest, config_fingerprint(part.config), n_devices)
  return manager, latest


def _train_part(config, manager, latest, *, devices, stop_after_chunks, reporter,
                tensorboard_dir) -> _PartResult:
  """Trains (or resumes, or just restores) the runs of `config`'s grid in `manager`'s directory."""
  runs = config_lib.run_grid(config)
  fingerprint = config_fingerprint(config)
  trainer, compiled = compiled_for(config, devices)
  n_devices = compiled.sharding.mesh.size
  per_device, _ = _layout(len(runs), n_devices)
  shard = lambda x: jax.device_put(_pad_and_shape(x, n_devices, per_device), compiled.sharding)
  hparams = jax.tree.map(shard, _hparams(runs))
  key_data = shard(_key_data(runs))
  timings = {"compile_init_s": 0.0, "compile_chunk_s": 0.0, "train_s": 0.0}
  onset = _onset(config)
  last_chunk = trainer.n_chunks if stop_after_chunks is None else min(stop_after_chunks,
                                                                      trainer.n_chunks)
  chunks_done = 0
  if latest is None or latest < last_chunk:
    reporter.compiling(compiled.chunk, n_runs=len(runs), n_devices=n_devices,
                       per_device=per_device, steps=config.train.steps,
                       chunk_steps=config.train.chunk_steps, execution=config.execution)

  if latest is None:
    t0 = time.perf_counter()
    state, first = compiled.init(key_data, hparams)
    history = {name: value[:, None] for name, value in _unlayout(first, len(runs)).items()}
    timings["compile_init_s"] = time.perf_counter() - t0
    reporter.initialised(len(runs), timings["compile_init_s"])
  else:
    abstract = jax.eval_shape(compiled.init, key_data, hparams)[0]
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=compiled.sharding), abstract)
    state, history, chunks_done = _restore(manager, latest, abstract)
    if chunks_done < trainer.n_chunks:
      reporter.info("resuming %s from chunk %d/%d", manager.directory, chunks_done,
                    trainer.n_chunks)
    else:
      reporter.info("restored %d finished runs from %s", len(runs), manager.directory)

  writer = None
  if tensorboard_dir and jax.process_index() == 0 and chunks_done < last_chunk:
    writer = tensorboard.SweepWriter(tensorboard_dir, runs,
                                     first_step=chunks_done * config.train.chunk_steps + int(
                                         chunks_done > 0))
    if chunks_done == 0:
      writer.write(history, onset)
  try:
    for chunk_index in range(chunks_done, last_chunk):
      t0 = time.perf_counter()
      state, chunk_logs = compiled.chunk(state, hparams)
      chunk_logs = _unlayout(chunk_logs, len(runs))
      elapsed = time.perf_counter() - t0
      timings["compile_chunk_s" if chunk_index == chunks_done else "train_s"] += elapsed
      history = {name: np.concatenate([history[name], chunk_logs[name]], axis=1)
                 for name in history}
      manager.save(chunk_index + 1, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), logs=ocp.args.StandardSave(history),
          meta=ocp.args.JsonSave({"fingerprint": fingerprint, "chunks_done": chunk_index + 1,
                                  "devices": n_devices})))
      if writer:
        writer.write(chunk_logs, onset)
      reporter.chunk(compiled.chunk, index=chunk_index, n_chunks=trainer.n_chunks,
                     chunk_steps=config.train.chunk_steps, elapsed=elapsed, n_runs=len(runs),
                     runs=runs, logs=chunk_logs, onset=onset)
  finally:
    if writer:
      writer.close()
  manager.wait_until_finished()
  manager.close()
  complete = history["step"].shape[1] == len(trainer.logged_steps)
  return _PartResult(runs, history, state, timings, n_devices, compiled.sharding, complete)


def _onset(config) -> dict:
  return {"metric": config.metrics.onset_metric, "threshold": config.metrics.onset_threshold,
          "layer_reduce": config.metrics.onset_layer_reduce}


def run_sweep(config, workdir: str, *, stop_after_chunks: int | None = None,
              devices=None, verbose: bool = True) -> SweepResult:
  """Trains every run of `config`'s grid, writing checkpoints and outputs under `workdir`.

  Args:
    config: a validated sweep config (`config_lib.validate`).
    workdir: output directory; resumes from `workdir/checkpoints` if it holds a checkpoint of the
      same config (else `WorkdirError`, also for an unreadable checkpoint). A larger grid (more
      seeds, learning rates or brakes, nothing else changed) keeps the finished runs and trains
      only the new ones (`rc_jax.grid`).
    stop_after_chunks: stop (after checkpointing) once this many chunks are done in total (in each
      part of a grown workdir); outputs are then not written. For pausing long sweeps, and for
      tests of resumption.
    devices: devices to shard the run axis over (default: all).
    verbose: log progress to the "rc_jax" logger (`rc_jax.progress`).

  Returns:
    SweepResult (logs and paths empty when stopped early).
  """
  config_lib.validate(config)
  t_start = time.perf_counter()
  reporter = progress.Reporter(verbose)
  devices = tuple(jax.devices() if devices is None else devices)
  parts, grids = grid.plan(config, workdir, reporter.info)
  opened = [_open_part(part, len(devices)) for part in parts]
  grid.commit(config, workdir, grids)
  with outputs.atomic_open(os.path.join(workdir, "config.json")) as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
  runs = config_lib.run_grid(config)
  reporter.info("sweep of %d runs into %s", len(runs), workdir)
  reporter.devices(devices, jax.process_index(), jax.process_count())
  tensorboard_dir = os.path.join(workdir, "tensorboard") if config.output.tensorboard else None
  results = []
  for part, (manager, latest) in zip(parts, opened):
    if part.label:
      reporter.info("part %s: %d runs", part.label, len(config_lib.run_grid(part.config)))
    results.append(_train_part(part.config, manager, latest, devices=devices,
                               stop_after_chunks=stop_after_chunks, reporter=reporter,
                               tensorboard_dir=tensorboard_dir))
  timings = {name: sum(r.timings[name] for r in results) for name in results[0].timings}
  n_devices, sharding = results[0].n_devices, results[0].sharding
  if [grid.run_key(r) for r in results[0].runs] == [grid.run_key(r) for r in runs]:
    state = results[0].state  # one part, in the config's order
  else:
    host = grid.merge(runs, [r.runs for r in results],
                      [_unlayout(r.state, len(r.runs)) for r in results])
    per_device, _ = _layout(len(runs), n_devices)
    state = jax.tree.map(
        lambda x: jax.device_put(_pad_and_shape(x, n_devices, per_device), sharding), host)
  if not all(r.complete for r in results):  # stopped early: no outputs yet
    return SweepResult(runs, {}, state, {}, timings)
  history = grid.merge(runs, [r.runs for r in results], [r.history for r in results])
  timings["total_s"] = time.perf_counter() - t_start
  extra = {"timings": timings, "devices": n_devices, "execution": config.execution.to_dict(),
           "fingerprint": config_fingerprint(config), "grids": grids}
  reporter.info("writing tables and figures")
  paths = outputs.write_all(workdir, runs, history, _onset(config), extra)
  reporter.info("done: %d runs in %.1fs; outputs in %s", len(runs), timings["total_s"], workdir)
  return SweepResult(runs, history, state, paths, timings)


def single_run(trainer: Trainer, seed: int, hparams: dict):
  """One run alone, jitted: `trainer.train(key(seed), hparams)` (the reference for a sweep's run)."""
  hparams = {k: jnp.float32(v) for k, v in hparams.items()}
  return jax.jit(trainer.train)(jax.random.key(seed), hparams)

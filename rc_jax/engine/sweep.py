"""The sweep engine: seeds x grid -> one run axis -> one compiled, sharded, checkpointed program.

    result = run_sweep(config, workdir)

The run axis (padded to a multiple of the device count) is laid out `[n_devices, runs_per_device]`
and sharded over a 1-D `Mesh` with an Auto `'runs'` axis. Within a device, `config.execution.mode`
decides how runs execute — the numbers are the same in every mode:

  auto        (default) `vmap` if XLA's memory analysis of that program fits the device's memory
              budget, else `map` with the largest group that fits; on CPU also groups small enough
              for the cache (`rc_jax.engine.memory_plan`);
  vmap        all of the device's runs batched (`jax.vmap`): best on accelerators;
  map         `lax.map` over groups of `execution.chunk` vmapped runs: bounded memory;
  sequential  `lax.map` one run at a time, still one compiled program.

Training proceeds in chunks of `train.chunk_steps`: a Python loop over one jitted chunk function,
a verified Orbax checkpoint (run-batched state, logs so far, JSON metadata, digests of all three:
`rc_jax.engine.checkpoints`) after each chunk, and resumption from the newest intact checkpoint when
rerun with the same workdir and config. A rerun of a finished sweep recomputes and rewrites nothing
(unless `overwrite_outputs`); stale temporary output files of a killed run are removed.

Equivalence of the modes: they run the same arithmetic in a different batching, which XLA may fuse
and round differently, so they agree to float32 rounding, not bit for bit: on CPU, 4 tiny runs on
one device differ by ~1e-7 relative in the loss from step 0 on (the largest relative difference
of any logged metric after 40 steps: 2e-4, in a near-zero correlation), and chaotic training
amplifies this over thousands of steps (~1e-3 in final losses after 2400 steps). The same holds
for one run in grids of different sizes (the runs a device holds change its batch). The mode of
each chunk is recorded (`summary.json` "execution_per_chunk") and resuming under another mode
says so. With the same mode, device count and grid, results are bit-for-bit reproducible on CPU,
in one process or several.

Several processes (`rc_jax.engine.distributed`): the run axis is sharded over every process's
devices; host arrays enter with `make_array_from_callback` and logs leave all-gathered to every
process; every process takes part in checkpointing; only process 0 writes the config, tables and
figures.

Diverged runs (rc_jax/engine/train.py) are frozen in-step; the outputs give each run a `status`
("ok" or "diverged") and `diverged_step`, and its later metrics are NaN, so no aggregate reads them.

Progress goes to the "rc_jax" logger (`rc_jax.engine.progress`: the program's size before compiling,
one line per chunk with an ETA from the steady chunks, a per-grid-point digest); with
`config.output.tensorboard`, process 0 appends per-run TensorBoard curves to `workdir/tensorboard`
after every chunk (`rc_jax.outputs.tensorboard`).

Rerun with a larger grid (more seeds, learning rates or brakes, nothing else changed), a workdir
keeps its runs and trains only the new ones, as sub-sweeps with their own checkpoints, merged into
the outputs of the whole grid (`rc_jax.engine.grid`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import glob
import json
import os
import re
import tempfile
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rc_jax.engine import (checkpoints, compile_cache, config_lib, distributed, grid, grid_limits,
                           memory_plan, progress)
from rc_jax.outputs import artifacts, tables, tensorboard
from rc_jax.engine.programs import (CompiledSweep, builders_for, config_fingerprint, hparams_of,
                                   layout, trainer_for)
from rc_jax.engine.train import Trainer

WorkdirError = checkpoints.WorkdirError


class SweepResult(NamedTuple):
  runs: list[dict]
  logs: dict[str, np.ndarray]   # [R, K] or [R, K, L], host arrays, padding removed
  state: Any                    # final run-batched TrainState, [n_devices, runs_per_device, ...]
  paths: dict[str, str]         # output files written
  timings: dict[str, float]     # compile_s (init and chunk programs, ahead of their calls, auto's
                                # memory plan included); init_s; train_s (the chunks); total_s;
                                # summed over the calls that built the sweep (resumes, parts)
  already_complete: bool = False  # a rerun of a finished sweep: nothing computed or rewritten


def _pad_and_shape(x: np.ndarray, n_devices: int, per_device: int) -> np.ndarray:
  """`[R, ...]` -> `[n_devices, per_device, ...]`, padding by repeating the last run."""
  pad = n_devices * per_device - x.shape[0]
  x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
  return x.reshape((n_devices, per_device) + x.shape[1:])


_COMPILED: dict[tuple, tuple[Trainer, CompiledSweep]] = {}


def _compiled_key(config, devices: tuple) -> tuple:
  planned_for = (layout(len(config_lib.run_grid(config)), len(devices))[0]
                 if config.execution.mode == "auto" else None)  # auto's plan depends on the count
  return (config_fingerprint(config, exclude=("sweep",)),
          json.dumps(config.execution.to_dict(), sort_keys=True), tuple(d.id for d in devices),
          planned_for)


def compiled_for(config, devices=None) -> tuple[Trainer, CompiledSweep]:
  """`(trainer, compile_sweep(trainer, ...))`, cached per (config but its grid, execution, devices,
  runs per device under "auto") in this process, so a resumed, repeated or same-sized sweep reuses
  the compiled programs."""
  devices = tuple(jax.devices() if devices is None else devices)
  cache_key = _compiled_key(config, devices)
  if cache_key not in _COMPILED:
    trainer = trainer_for(config)
    _COMPILED[cache_key] = (trainer, compile_sweep(trainer, config, devices))
  return _COMPILED[cache_key]


def compile_sweep(trainer: Trainer, config, devices=None) -> CompiledSweep:
  """jit(vmap over devices(execute over runs(trainer fn))) with the run axis sharded, compiled: the
  init program in a background thread while the chunk compiles (XLA releases the GIL, so the two
  compile side by side). In "auto" mode `memory_plan.choose` picks the execution."""
  devices = tuple(jax.devices() if devices is None else devices)
  programs = builders_for(trainer, devices)
  per_device, _ = layout(len(config_lib.run_grid(config)), len(devices))
  mode = config.execution.mode
  program = programs.build("vmap" if mode == "auto" else mode,
                           per_device if mode == "auto" else config.execution.chunk)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    init_compiled = pool.submit(programs.compile_init, program, per_device)
    if mode == "auto":
      budget, source = memory_plan.budget_bytes(devices, config.execution.memory_budget_gib)
      cache = memory_plan.CPU_GROUP_BYTES if devices[0].platform == "cpu" else None
      plan = memory_plan.choose(programs.build, programs.compile_chunk, per_device, budget, source,
                                cache_bytes=cache)
      program = plan.program._replace(plan=plan.describe())
    else:
      programs.compile_chunk(program, per_device)
    init_compiled.result()
  return program


def _key_data(runs: list[dict]) -> np.ndarray:
  return np.stack([np.asarray(jax.random.key_data(jax.random.key(r["seed"]))) for r in runs])


def unlayout(tree, n_runs: int):
  """`[n_dev, per_dev, ...]` global arrays -> host `[R, ...]` with the padding dropped (gathered
  from every process)."""
  def one(x):
    return x.reshape((-1,) + x.shape[2:])[:n_runs]
  return jax.tree.map(one, distributed.to_host(tree))


def check_workdir(workdir: str) -> str:
  """The absolute workdir, or WorkdirError if it is empty, not a directory or not writable.

  Writes nothing (the nearest existing ancestor of a new workdir must be a writable directory).
  """
  if workdir is None or not str(workdir).strip():
    raise WorkdirError("the workdir is empty: give a directory (--workdir=DIR)")
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"workdir {path} exists and is not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f"workdir {path} cannot be created: {existing} is not a directory")
  for directory in (existing, os.path.join(path, "checkpoints"), os.path.join(path, "figures")):
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
      raise WorkdirError(f"workdir {path} is not writable ({directory} is read-only)")
  try:  # what access() cannot see (root on some file systems): create and remove a directory
    os.rmdir(tempfile.mkdtemp(prefix=".rc_jax_probe_", dir=existing))
  except OSError as err:
    raise WorkdirError(f"workdir {path} is not writable ({existing}: {err.strerror})") from err
  return path


_TMP_NAME = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")  # tables.atomic_open's temporaries


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # exists, owned by someone else
    return True
  return True


def remove_stale_tmp(workdir: str) -> list[str]:
  """Deletes temporary output files left in `workdir` (and figures/) by killed processes."""
  removed = []
  for path in glob.glob(os.path.join(workdir, ".*.tmp")) + glob.glob(
      os.path.join(workdir, "figures", ".*.tmp")):
    match = _TMP_NAME.match(os.path.basename(path))
    if match and (int(match.group(1)) == os.getpid() or not _pid_alive(int(match.group(1)))):
      os.remove(path)
      removed.append(path)
  if removed:
    progress.LOGGER.info("removed %d stale temporary file(s) from %s", len(removed), workdir)
  return removed


def _existing_outputs(workdir: str, fingerprint: str, n_logged: int) -> dict[str, str] | None:
  """`{name: path}` of a finished sweep's outputs in `workdir` (summary.json, written last, of
  this config and complete), else None."""
  summary_path = os.path.join(workdir, "summary.json")
  try:
    with open(summary_path, encoding="utf-8") as f:
      summary = json.load(f)
  except (OSError, ValueError):
    return None
  if summary.get("fingerprint") != fingerprint or summary.get("n_steps_logged") != n_logged:
    return None
  paths = artifacts.output_paths(workdir)
  return paths if all(os.path.isfile(p) for p in paths.values()) else None


def _check_meta(fingerprint: str, n_devices: int, directory: str) -> Callable[[dict], None]:
  def check(meta: dict) -> None:
    if meta.get("fingerprint") != fingerprint:
      raise WorkdirError(
          f"{directory} holds checkpoints of a different config (fingerprint "
          f"{meta.get('fingerprint')} != {fingerprint}); use a fresh --workdir")
    if meta.get("devices") != n_devices:
      raise WorkdirError(
          f"{directory} was written sharded over {meta.get('devices')} devices, this sweep has "
          f"{n_devices}; resume with the same device count or use a fresh --workdir")
  return check


def _warn_if_other_execution(workdir: str, done: list[str], label: str) -> None:
  others = sorted(set(done) - {label})
  if others:
    progress.LOGGER.warning(
        "resuming %s under execution %s; its first %d chunks ran under %s: execution modes agree "
        "to float32 rounding, not bit for bit, so these numbers mix both (execution_per_chunk in "
        "summary.json)", workdir, label, len(done), " and ".join(others))


@functools.lru_cache(maxsize=None)
def _one_run_shapes(trainer: Trainer) -> tuple:
  """`(state, logs)` shapes of one run after `trainer.init` (traced once per trainer)."""
  hparams = {"brake": jnp.float32(0.0), "learning_rate": jnp.float32(1e-3)}
  return jax.eval_shape(trainer.init, jax.random.key(0), hparams)


class _Part(NamedTuple):
  """A part of a sweep (the whole sweep unless its workdir grew) ready to train."""
  config: Any
  label: str
  runs: list[dict]
  trainer: Trainer
  compiled: CompiledSweep
  n_devices: int
  per_device: int
  compile_s: float = 0.0           # spent compiling it in this call (0: compiled already)
  store: checkpoints.VerifiedCheckpoints | None = None
  restored: checkpoints.Restored | None = None


class _Trained(NamedTuple):
  runs: list[dict]                 # with status and diverged_step
  history: dict[str, np.ndarray]   # [R, K(, L)] host logs so far
  state: Any
  timings: dict[str, float]        # this part's, over every call that trained it
  execution: list[str]             # execution label per chunk done
  first_chunk: int                 # chunks done before this call
  complete: bool


def _compile_part(grid_part: grid.Part, devices, workdir: str,
                  reporter: progress.Reporter) -> _Part:
  """Checks that a part's grid fits (from its shapes), then compiles it; writes nothing."""
  config = grid_part.config
  runs = config_lib.run_grid(config)
  trainer = trainer_for(config)  # reads the task's data: may raise ValueError
  devices = tuple(jax.devices() if devices is None else devices)
  n_devices = len(devices)
  per_device, _ = layout(len(runs), n_devices)
  one_state, one_logs = _one_run_shapes(trainer)
  grid_limits.check_grid(len(runs), n_devices, one_state, one_logs, len(trainer.logged_steps),
                         max_to_keep=config.checkpoint.max_to_keep, workdir=workdir)
  cached = _compiled_key(config, devices) in _COMPILED
  mode = config.execution.mode
  reporter.compiling(cached=cached, n_runs=len(runs), n_devices=n_devices, per_device=per_device,
                     steps=config.train.steps, chunk_steps=config.train.chunk_steps,
                     execution=f"map(chunk={config.execution.chunk})" if mode == "map" else mode)
  t0 = time.perf_counter()
  _, compiled = compiled_for(config, devices)  # plans memory ("auto"): may raise MemoryBudgetError
  compile_s = time.perf_counter() - t0
  if not cached:
    reporter.compiled(compile_s, compiled.execution, compiled.plan)
  return _Part(config, grid_part.label, runs, trainer, compiled, n_devices, per_device, compile_s)


def _open_part(part: _Part, workdir: str) -> _Part:
  """The part with its checkpoint store opened and its newest intact checkpoint restored."""
  store = checkpoints.VerifiedCheckpoints(os.path.join(workdir, "checkpoints"),
                                          max_to_keep=part.config.checkpoint.max_to_keep)
  one_state, _ = _one_run_shapes(part.trainer)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((part.n_devices, part.per_device) + x.shape, x.dtype,
                                     sharding=part.compiled.sharding), one_state)
  try:
    restored = store.restore_latest(abstract, _check_meta(
        config_fingerprint(part.config), part.n_devices, store.directory))
  except BaseException:
    store.close()
    raise
  return part._replace(store=store, restored=restored)


def _train_part(part: _Part, *, stop_after_chunks, reporter, tensorboard_dir) -> _Trained:
  """Trains the part's runs from its restored checkpoint (or from scratch), checkpointing each
  chunk; closes its store."""
  t_start = time.perf_counter() - part.compile_s  # the part's total_s counts its compilation
  config, runs, trainer, compiled, store = (part.config, part.runs, part.trainer, part.compiled,
                                            part.store)
  fingerprint, n_devices = config_fingerprint(config), part.n_devices
  shard = lambda x: distributed.global_array(_pad_and_shape(x, n_devices, part.per_device),
                                             compiled.sharding)
  hparams = jax.tree.map(shard, hparams_of(runs))
  timings = {"compile_s": 0.0, "init_s": 0.0, "train_s": 0.0}
  label = compiled.execution
  onset = onset_config(config)
  last_chunk = trainer.n_chunks if stop_after_chunks is None else min(stop_after_chunks,
                                                                      trainer.n_chunks)
  restored = part.restored
  if restored is None:
    t0 = time.perf_counter()
    state, first = compiled.init(shard(_key_data(runs)), hparams)
    history = {name: value[:, None] for name, value in unlayout(first, len(runs)).items()}
    timings["init_s"] = time.perf_counter() - t0
    reporter.initialised(len(runs), timings["init_s"])
    chunks_done, execution = 0, []
  else:
    state, history = restored.state, restored.logs
    chunks_done, execution = restored.meta["chunks_done"], list(restored.meta["execution"])
    timings.update(restored.meta["timings"])
    if chunks_done < trainer.n_chunks:
      reporter.info("resuming %s from chunk %d/%d", store.directory, chunks_done,
                    trainer.n_chunks)
    else:
      reporter.info("restored %d finished runs from %s", len(runs), store.directory)
    _warn_if_other_execution(store.directory, execution, label)

  timings["compile_s"] = timings.get("compile_s", 0.0) + part.compile_s
  first_chunk, earlier_total_s = chunks_done, timings.get("total_s", 0.0)
  writer = None
  try:
    if tensorboard_dir and distributed.is_main() and chunks_done < last_chunk:
      writer = tensorboard.SweepWriter(
          tensorboard_dir, runs,
          first_step=chunks_done * config.train.chunk_steps + int(chunks_done > 0))
      if chunks_done == 0:
        writer.write(history, onset)
    for chunk_index in range(chunks_done, last_chunk):
      t0 = time.perf_counter()
      state, chunk_logs = compiled.chunk(state, hparams)
      chunk_logs = unlayout(chunk_logs, len(runs))
      elapsed = time.perf_counter() - t0
      timings["train_s"] += elapsed
      timings["total_s"] = earlier_total_s + time.perf_counter() - t_start
      history = {name: np.concatenate([history[name], chunk_logs[name]], axis=1)
                 for name in history}
      execution.append(label)
      store.save(chunk_index + 1, state, history, {
          "fingerprint": fingerprint, "chunks_done": chunk_index + 1, "devices": n_devices,
          "execution": execution, "timings": timings})
      if writer:
        writer.write(chunk_logs, onset)
      reporter.chunk(index=chunk_index, n_chunks=trainer.n_chunks,
                     chunk_steps=config.train.chunk_steps, elapsed=elapsed, n_runs=len(runs),
                     runs=runs, logs=chunk_logs, onset=onset)
  finally:
    store.close()
    if writer:
      writer.close()
  timings["total_s"] = earlier_total_s + time.perf_counter() - t_start
  diverged_at = unlayout(state.diverged_at, len(runs))
  runs = [dict(run, status="diverged" if d >= 0 else "ok", diverged_step=int(d) if d >= 0 else None)
          for run, d in zip(runs, diverged_at.tolist())]
  complete = history["step"].shape[1] == len(trainer.logged_steps)
  return _Trained(runs, history, state, timings, execution, first_chunk, complete)


def onset_config(config) -> dict:
  """The sweep's onset definition (`rc_jax.outputs.tables`' `onset`) from `config.metrics`."""
  return {"metric": config.metrics.onset_metric, "threshold": config.metrics.onset_threshold,
          "rise": config.metrics.onset_rise, "layer_reduce": config.metrics.onset_layer_reduce}


def _merge_parts(runs: list[dict], parts: list[_Part], trained: list[_Trained]):
  """Runs (with status), host logs and the run-batched state of the whole grid, in `runs` order."""
  part_runs = [t.runs for t in trained]
  where = {grid.run_key(run): run for runs_p in part_runs for run in runs_p}
  merged_runs = [dict(run, status=where[grid.run_key(run)]["status"],
                      diverged_step=where[grid.run_key(run)]["diverged_step"]) for run in runs]
  history = grid.merge(runs, part_runs, [t.history for t in trained])
  if [grid.run_key(r) for r in part_runs[0]] == [grid.run_key(r) for r in runs]:
    return merged_runs, history, trained[0].state  # one part, in the config's order
  host = grid.merge(runs, part_runs,
                    [unlayout(t.state, len(t.runs)) for t in trained])
  n_devices, sharding = parts[0].n_devices, parts[0].compiled.sharding
  per_device, _ = layout(len(runs), n_devices)
  state = jax.tree.map(lambda x: distributed.global_array(
      _pad_and_shape(x, n_devices, per_device), sharding), host)
  return merged_runs, history, state


def run_sweep(config, workdir: str, *, stop_after_chunks: int | None = None,
              devices=None, overwrite_outputs: bool = False, verbose: bool = True) -> SweepResult:
  """Trains every run of `config`'s grid, writing checkpoints and outputs under `workdir`.

  Bad input (config, workdir, data, a grid too large: ValueError / WorkdirError) is refused before
  anything is written.

  Args:
    config: a sweep config (validated here).
    workdir: output directory; resumes from the newest intact checkpoint in
      `workdir/checkpoints` of the same config (else `WorkdirError`). A larger grid (more seeds,
      learning rates or brakes, nothing else changed) keeps the runs the workdir holds and
      trains only the new ones (`rc_jax.engine.grid`).
    stop_after_chunks: stop (after checkpointing) once this many chunks are done in total (in each
      part of a grown workdir); outputs are then not written. For pausing long sweeps, and for
      tests of resumption.
    devices: devices to shard the run axis over (default: all, of every process).
    overwrite_outputs: rewrite the tables and figures of an already finished sweep.
    verbose: log progress to the "rc_jax" logger (`rc_jax.engine.progress`).

  Returns:
    SweepResult (logs and paths empty when stopped early). Its runs carry "status" ("ok" or
    "diverged") and "diverged_step" (None when ok).
  """
  config_lib.validate(config)
  t_start = time.perf_counter()
  compile_cache.enable()
  reporter = progress.Reporter(verbose)
  runs = config_lib.run_grid(config)
  fingerprint = config_fingerprint(config)
  workdir = check_workdir(workdir)
  if config.output.tensorboard:
    tensorboard.check_available()  # before anything is written
  devices = tuple(jax.devices() if devices is None else devices)
  grid_free = config_fingerprint(config, exclude=("sweep",))
  reporter.info("sweep of %d runs into %s", len(runs), workdir)
  reporter.devices(devices, distributed.process_index(), distributed.process_count())
  grid_parts, grids = grid.plan(config, workdir, grid_free, reporter.info)
  parts = [_compile_part(p, devices, workdir, reporter) for p in grid_parts]

  if distributed.is_main():
    os.makedirs(workdir, exist_ok=True)
    remove_stale_tmp(workdir)
  distributed.sync("rc_jax_workdir")
  opened: list[_Part] = []
  try:
    for part, grid_part in zip(parts, grid_parts):
      opened.append(_open_part(part, grid_part.workdir))
  except BaseException:
    for part in opened:
      part.store.close()
    raise
  if distributed.is_main():
    try:
      grid.commit(workdir, grid_free, grids)
      with tables.atomic_open(os.path.join(workdir, "config.json")) as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True, default=str)
    except OSError as err:
      raise WorkdirError(f"cannot write {workdir}/config.json ({err})") from err

  tensorboard_dir = os.path.join(workdir, "tensorboard") if config.output.tensorboard else None
  trained = []
  for index, part in enumerate(opened):
    if part.label:
      reporter.info("part %s: %d runs", part.label, len(part.runs))
    try:
      trained.append(_train_part(part, stop_after_chunks=stop_after_chunks,
                                 reporter=progress.Reporter(verbose),
                                 tensorboard_dir=tensorboard_dir))
    except BaseException:
      for later in opened[index + 1:]:
        later.store.close()
      raise
  timings = {name: sum(t.timings.get(name, 0.0) for t in trained)
             for name in ("compile_s", "init_s", "train_s")}
  earlier_total_s = sum(p.restored.meta["timings"].get("total_s", 0.0) for p in opened
                        if p.restored is not None)  # calls before this one
  runs, history, state = _merge_parts(runs, opened, trained)
  if not all(t.complete for t in trained):  # stopped early: no outputs yet
    timings["total_s"] = earlier_total_s + time.perf_counter() - t_start
    return SweepResult(runs, {}, state, {}, timings)
  n_logged = len(opened[0].trainer.logged_steps)
  existing = _existing_outputs(workdir, fingerprint, n_logged)
  if all(t.first_chunk == p.trainer.n_chunks for t, p in zip(trained, opened)) and existing and \
      not overwrite_outputs:
    timings["total_s"] = sum(t.timings.get("total_s", 0.0) for t in trained)
    progress.LOGGER.warning("%s holds a finished sweep of this config: nothing recomputed or "
                            "rewritten (--overwrite_outputs rewrites the tables and figures)",
                            workdir)
    return SweepResult(runs, history, state, existing, timings, already_complete=True)
  timings["total_s"] = earlier_total_s + time.perf_counter() - t_start
  extra = {"timings": timings, "devices": opened[0].n_devices,
           "processes": distributed.process_count(), "execution": config.execution.to_dict(),
           "execution_per_chunk": trained[0].execution, "fingerprint": fingerprint,
           "router": config.router, "config": config.to_dict(), "grids": grids,
           "environment": distributed.environment()}
  if len(trained) > 1:
    extra["parts"] = [{"workdir": p.label or ".", "runs": len(p.runs),
                       "execution_per_chunk": t.execution} for p, t in zip(opened, trained)]
  paths = {}
  if distributed.is_main():
    reporter.info("writing tables and figures")
    try:
      paths = artifacts.write_all(workdir, runs, history, onset_config(config), extra)
    except OSError as err:
      raise WorkdirError(f"cannot write the outputs into {workdir} ({err}); the sweep is "
                         "checkpointed: free space and rerun to write them") from err
  distributed.sync("outputs_written")  # leave together (JAX's shutdown barrier waits only 300 s)
  reporter.info("done: %d runs in %.1fs; outputs in %s", len(runs), timings["total_s"], workdir)
  return SweepResult(runs, history, state, paths, timings)


def single_run(trainer: Trainer, seed: int, hparams: dict):
  """One run alone, jitted: `trainer.train(key(seed), hparams)` (the reference for a sweep's run)."""
  hparams = {k: jnp.float32(v) for k, v in hparams.items()}
  return jax.jit(trainer.train)(jax.random.key(seed), hparams)

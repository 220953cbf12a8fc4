"""One measurement per process (clean peak memory, cold compilation): `python -m benchmarks.workers
--impl=engine|sequential|torch|overhead --shape=cpu --runs=16 --steps=200 [...]` prints one line
`RESULT {json}`. Run by `benchmarks/sweep.py`; see there for what is measured.
"""

from __future__ import annotations

import argparse
import json
import logging as pylogging
import os
import resource
import sys
import tempfile
import time

import numpy as np


class _Compiles:
  """Sums JAX's compile-time events of this process (`jax.monitoring`)."""

  def __init__(self):
    from jax import monitoring  # pylint: disable=g-import-not-at-top
    self.seconds = {"trace": 0.0, "lower": 0.0, "compile": 0.0}
    self.counts = {"hits": 0, "misses": 0, "backend": 0}
    self.intervals = []  # (start, end) of every backend compilation, for their wall-clock union
    names = {"/jax/core/compile/jaxpr_trace_duration": "trace",
             "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
             "/jax/core/compile/backend_compile_duration": "compile"}

    def on_duration(name, seconds, **_):
      if name in names:
        self.seconds[names[name]] += seconds
        if names[name] == "compile":
          self.counts["backend"] += 1
          end = time.perf_counter()
          self.intervals.append((end - seconds, end))

    def on_event(name, **_):
      if name == "/jax/compilation_cache/cache_hits":
        self.counts["hits"] += 1
      elif name == "/jax/compilation_cache/cache_misses":
        self.counts["misses"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)

  def reset(self) -> None:
    self.seconds = dict.fromkeys(self.seconds, 0.0)
    self.counts = dict.fromkeys(self.counts, 0)
    self.intervals = []

  def wall(self) -> float:
    """Seconds during which at least one compilation ran (compilations overlap in threads)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(self.intervals):
      if end > reach:
        total += end - max(start, reach)
        reach = end
    return total

  def summary(self) -> dict:
    return {"trace_s": self.seconds["trace"], "lower_s": self.seconds["lower"],
            "compile_s": self.wall(), "compile_sum_s": self.seconds["compile"],
            "cache_hits": self.counts["hits"],
            "cache_misses": self.counts["misses"], "backend_compiles": self.counts["backend"]}


def _best_rate(fn, flops: float, repeats: int = 5) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return flops / best


def jax_matmul_peak() -> float:
  """Best FLOP/s of a jitted float32 `a @ b` over square sizes, measured now in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sizes = (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192)
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    best = max(best, _best_rate(lambda: matmul(a, a).block_until_ready(), 2.0 * n**3))
  return best


def torch_matmul_peak() -> float:
  import torch  # pylint: disable=g-import-not-at-top
  best = 0.0
  for n in (1024, 2048):
    a = torch.randn(n, n)
    best = max(best, _best_rate(lambda: torch.mm(a, a), 2.0 * n**3))
  return best


def _finish(result: dict) -> None:
  result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  result["load_end"] = os.getloadavg()[0]
  print("RESULT " + json.dumps(result), flush=True)


class _PlanLog(pylogging.Handler):
  """Keeps the memory plan's log line (`execution auto: ...`)."""

  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    message = record.getMessage()
    if message.startswith("execution auto:"):
      self.lines.append(message)


def run_engine(args, config) -> dict:
  """The sweep as the launcher runs it: `run_sweep` (compile, train, checkpoint, write outputs)."""
  from rc_jax.engine import compile_cache, sweep  # pylint: disable=g-import-not-at-top
  compiles = _Compiles()
  compile_cache.enable(args.cache_dir)
  plan_log = _PlanLog()
  rc_jax_logger = pylogging.getLogger("rc_jax")  # run_sweep's progress, the plan among it
  rc_jax_logger.setLevel(pylogging.INFO)
  rc_jax_logger.addHandler(plan_log)
  peak = jax_matmul_peak()
  compiles.reset()  # count only the sweep's compilations
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    result = sweep.run_sweep(config, workdir)
    wall = time.perf_counter() - t0
  steady_steps = config.train.steps  # train_s: every chunk (compilation is timed apart)
  timings = result.timings
  return {"wall_s": wall, "steady_s": timings["train_s"], "steady_steps": steady_steps,
          "steady_run_steps_per_s": args.runs * steady_steps / timings["train_s"],
          "matmul_peak_flops": peak, "plan": plan_log.lines[-1] if plan_log.lines else "",
          "final_loss": float(np.mean(result.logs["loss"][:, -1])), **compiles.summary()}


def run_sequential(args, config) -> dict:
  """The same runs one after another, each `jax.jit(trainer.train)(key, hparams)` (compiled once)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rc_jax.engine import compile_cache, config_lib  # pylint: disable=g-import-not-at-top
  from rc_jax.engine.train import make_train  # pylint: disable=g-import-not-at-top
  compiles = _Compiles()
  compile_cache.enable(args.cache_dir)
  peak = jax_matmul_peak()
  compiles.reset()
  t0 = time.perf_counter()
  trainer = make_train(config)
  train = jax.jit(trainer.train)
  key_shape = jax.eval_shape(lambda: jax.random.key(0))
  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  compiled = train.lower(key_shape, {"brake": scalar, "learning_rate": scalar}).compile()
  compile_wall = time.perf_counter() - t0
  run_times, losses = [], []
  for run in config_lib.run_grid(config):
    t = time.perf_counter()
    hparams = {"brake": jnp.float32(run["brake"]), "learning_rate": jnp.float32(run["learning_rate"])}
    _, logs = compiled(jax.random.key(run["seed"]), hparams)
    logs = jax.tree.map(np.asarray, logs)  # to the host, as a researcher would
    run_times.append(time.perf_counter() - t)
    losses.append(float(logs["loss"][-1]))
  wall = time.perf_counter() - t0
  return {"wall_s": wall, "steady_s": sum(run_times), "steady_steps": config.train.steps,
          "steady_run_steps_per_s": args.runs * config.train.steps / sum(run_times),
          "setup_s": compile_wall, "matmul_peak_flops": peak, "final_loss": float(np.mean(losses)),
          **compiles.summary()}


def _torch_data(config):
  """`(batches(seed) -> [(inputs, targets)] * steps, probe)`: the engine's exact batches (the same
  key chain as `train.py`) and probe batch, from rc_jax's sampler, as int64 torch tensors."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from rc_jax import tasks  # pylint: disable=g-import-not-at-top
  from rc_jax.engine import problem  # pylint: disable=g-import-not-at-top
  task = config.task
  sample = tasks.make_sequence_task(
      task.name, vocab_size=task.vocab_size, seq_len=task.seq_len, batch_size=task.batch_size,
      task_key=jax.random.key(task.seed), **dict(task.options))

  @jax.jit
  def all_batches(seed_key):
    _, data_key = jax.random.split(seed_key)

    def step(key, _):
      key, batch_key = jax.random.split(key)
      batch = sample(batch_key)
      return key, (batch.inputs, batch.targets)

    return jax.lax.scan(step, data_key, None, length=config.train.steps)[1]

  def batches(seed: int):
    inputs, targets = jax.device_get(all_batches(jax.random.key(seed)))
    inputs, targets = torch.from_numpy(inputs).long(), torch.from_numpy(targets).long()
    return list(zip(inputs, targets))

  probe = problem.sequence_probe_batch(task)
  as_long = lambda x: torch.from_numpy(np.array(x)).long()
  return batches, (as_long(probe.inputs), as_long(probe.targets))


def _torch_threads(config, batch) -> tuple[int, dict[int, float]]:
  """The faster of 1 thread and PyTorch's default for this model (steps/s of 10 training steps):
  on a loaded machine the default's spinning OpenMP threads can be 20x slower than one thread."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_lm  # pylint: disable=g-import-not-at-top
  rates = {}
  for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
    torch.set_num_threads(threads)
    model = _torch_model(config)
    step = lambda: torch_lm.train_run(model, [batch] * 10, None, brake=0.1, learning_rate=1e-3,
                                      b1=0.9, b2=0.98, weight_decay=0.0, grad_clip=1.0,
                                      log_every=10**9, with_metrics=False)
    step()
    rates[threads] = _best_rate(step, 10.0, repeats=3)
  best = max(rates, key=rates.get)
  torch.set_num_threads(best)
  return best, rates


def _torch_model(config):
  from benchmarks import torch_lm  # pylint: disable=g-import-not-at-top
  m = config.model
  return torch_lm.TorchLM(vocab_size=config.task.vocab_size, seq_len=config.task.seq_len,
                          width=m.width, depth=m.depth, n_heads=m.n_heads, mlp_ratio=m.mlp_ratio)


def run_torch(args, config) -> dict:
  """A plain PyTorch loop over the same runs (`benchmarks/torch_lm.py`), one run after another."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_lm  # pylint: disable=g-import-not-at-top
  from rc_jax.engine import config_lib  # pylint: disable=g-import-not-at-top
  default_threads = torch.get_num_threads()
  t0 = time.perf_counter()
  batches, probe = _torch_data(config)
  first = batches(0)  # compiles the sampler (counted in the wall time, not in the steady state)
  setup = time.perf_counter() - t0
  threads, thread_rates = _torch_threads(config, first[0])
  peak = torch_matmul_peak()
  tr = config.train
  run_times, losses = [], []
  t1 = time.perf_counter()
  for run in config_lib.run_grid(config):
    t = time.perf_counter()
    torch.manual_seed(run["seed"])
    loss, _ = torch_lm.train_run(
        _torch_model(config), batches(run["seed"]), probe, brake=run["brake"],
        learning_rate=run["learning_rate"], b1=tr.b1, b2=tr.b2, weight_decay=tr.weight_decay,
        grad_clip=tr.grad_clip, log_every=tr.log_every, with_metrics=not args.metrics_off)
    run_times.append(time.perf_counter() - t)
    losses.append(loss[-1])
  wall = setup + time.perf_counter() - t1
  return {"wall_s": wall, "steady_s": sum(run_times), "steady_steps": tr.steps,
          "steady_run_steps_per_s": args.runs * tr.steps / sum(run_times), "setup_s": setup,
          "matmul_peak_flops": peak, "final_loss": float(np.mean(losses)),
          "torch_threads": threads, "torch_default_threads": default_threads,
          "torch_thread_steps_per_s": {str(k): v for k, v in thread_rates.items()}}


def run_overhead(args, config) -> dict:
  """The engine's in-step metrics overhead: steady chunk times with a measurement every
  `log_every` steps (k per chunk) and once per chunk; by linearity `T(k) = T0 + k m`, so
  `m = (T(k) - T(1)) / (k - 1)` and overhead = `k m / T0` (metrics on vs off)."""
  import jax  # pylint: disable=g-import-not-at-top
  from rc_jax.engine import compile_cache, config_lib, sweep  # pylint: disable=g-import-not-at-top
  compile_cache.enable(args.cache_dir)
  runs = config_lib.run_grid(config)
  chunk_steps = config.train.chunk_steps
  k = chunk_steps // config.train.log_every
  times = {}
  for measures in (k, 1):
    cfg = config.copy_and_resolve_references()
    cfg.train.update(log_every=chunk_steps // measures, steps=chunk_steps * (args.repeats + 1))
    trainer, compiled = sweep.compiled_for(cfg)
    n_dev = compiled.sharding.mesh.size
    per_device, _ = sweep.layout(len(runs), n_dev)
    shard = lambda x: jax.device_put(sweep._pad_and_shape(x, n_dev, per_device),  # pylint: disable=protected-access
                                     compiled.sharding)
    hparams = jax.tree.map(shard, sweep.hparams_of(runs))
    state, _ = compiled.init(shard(sweep._key_data(runs)), hparams)  # pylint: disable=protected-access
    state, logs = compiled.chunk(state, hparams)
    jax.block_until_ready(logs)
    best = float("inf")
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      state, logs = compiled.chunk(state, hparams)
      jax.device_get(logs)
      best = min(best, time.perf_counter() - t0)
    times[measures] = best
    del trainer
  per_measure = (times[k] - times[1]) / (k - 1)
  train_only = times[1] - per_measure
  return {"chunk_s_metrics_every_log": times[k], "chunk_s_metrics_once": times[1],
          "measures_per_chunk": k, "measure_s": per_measure, "train_only_s": train_only,
          "metrics_overhead": k * per_measure / train_only}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--impl", required=True, choices=("engine", "sequential", "torch", "overhead"))
  parser.add_argument("--shape", default="cpu")
  parser.add_argument("--runs", type=int, default=16)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--chunk_steps", type=int, default=None)
  parser.add_argument("--mode", default="auto", help="the engine's execution.mode")
  parser.add_argument("--group", type=int, default=8, help="execution.chunk for --mode=map")
  parser.add_argument("--cache_dir", default="off")
  parser.add_argument("--metrics_off", action="store_true")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--svd_method", default="svd", help="execution.svd_method of the engine")
  args = parser.parse_args(argv)
  load_start = os.getloadavg()[0]
  from benchmarks import shapes  # pylint: disable=g-import-not-at-top
  config = shapes.config_for(args.shape, args.runs, args.steps, chunk_steps=args.chunk_steps,
                             mode=args.mode, group=args.group, svd_method=args.svd_method)
  impl = {"engine": run_engine, "sequential": run_sequential, "torch": run_torch,
          "overhead": run_overhead}[args.impl]
  result = impl(args, config)
  result.update(impl=args.impl, shape=args.shape, runs=args.runs, steps=args.steps,
                mode=args.mode if args.mode != "map" else f"map:{args.group}", load_start=load_start,
                svd_method=args.svd_method,
                flops_per_run_step=shapes.train_flops_per_run_step(config))
  _finish(result)


if __name__ == "__main__":
  sys.exit(main())

"""Benchmark: the selective-SSM back-ends.

    python benchmarks/ssm_backends.py --part=cpu   # cpu-preset train step, SSM vs attention
    python benchmarks/ssm_backends.py --part=gpu   # paper-size SSM layer and routing probe

cpu: wall time of the jitted, vmapped (`--runs` runs) loss+gradient step of the `cpu` preset for
attention and for the SSM under each back-end, and of the probe forward (routing + prior), as
run-steps/s and as a ratio to attention (train step alone, min / median over `--reps` interleaved
rounds, and "sweep-like": one probe every 50 steps, from the minima; and the step's process CPU
time, all threads, min). gpu: the paper preset's SSM
layer (batch 64, T 128, C 256, N 16, 8 heads, dt_rank 8) forward+backward per back-end, and the
routing of a 16-sequence probe (time and XLA temp bytes), medians of `--reps` calls.
"""

from __future__ import annotations

import importlib.util
import os
import time

from absl import app, flags
import jax
import jax.numpy as jnp

_PART = flags.DEFINE_enum("part", "cpu", ["cpu", "gpu"], "Which benchmark to run.")
_RUNS = flags.DEFINE_integer("runs", 16, "Runs vmapped together.")
_REPS = flags.DEFINE_integer("reps", 10, "Timed calls per measurement.")
_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _median_seconds(f, *args) -> float:
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(_REPS.value):
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def _config(router: str, **model):
  spec = importlib.util.spec_from_file_location(router, os.path.join(_ROOT, "configs",
                                                                     f"{router}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("cpu")
  config.model.update(model)
  return config


def _cpu():
  from rc_jax.engine import problem as problem_lib  # pylint: disable=g-import-not-at-top
  from rc_jax.routers import scan  # pylint: disable=g-import-not-at-top
  runs = _RUNS.value
  cases = [("attention", {})] + [("ssm", {"ssm_backend": b}) for b in scan.BACKENDS]
  calls = {}
  for router, model in cases:
    config = _config(router, **model)
    problem = problem_lib.build_problem(config)
    params = jax.jit(jax.vmap(problem.init_params))(jax.random.split(jax.random.key(0), runs))
    brakes = jnp.linspace(0.0, 1.0, runs)
    keys = jax.random.split(jax.random.key(1), runs)
    grad = jax.jit(jax.vmap(jax.grad(problem.loss)))
    probe = jax.jit(jax.vmap(lambda p, b, problem=problem: jax.tree.leaves(problem.probe(p, b))))
    start = time.perf_counter()
    jax.block_until_ready(grad(params, brakes, keys))
    compile_s = time.perf_counter() - start
    jax.block_until_ready(probe(params, brakes))
    name = f"{router} {model.get('ssm_backend', '')}".strip()
    calls[name] = (compile_s, lambda g=grad, a=(params, brakes, keys): g(*a),
                   lambda p=probe, a=(params, brakes): p(*a))
  # Interleaved rounds, so that a load change on a shared machine hits every case alike.
  # Also process CPU time (all threads), less sensitive than wall time to other load.
  times = {name: ([], [], []) for name in calls}
  for _ in range(_REPS.value):
    for name, (_, step, probe) in calls.items():
      for f, out in zip((step, probe), times[name]):
        start, start_cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(f())
        out.append(time.perf_counter() - start)
        if f is step:
          times[name][2].append(time.process_time() - start_cpu)
  print(f"cpu preset, {runs} runs vmapped, {jax.device_count()} device(s), "
        f"{os.cpu_count()} cpus visible; min / median over {_REPS.value} interleaved rounds")
  print(f"{'model':<18}{'compile s':>10}{'step ms':>16}{'probe ms':>10}{'run-steps/s':>13}"
        f"{'vs attn':>13}{'sweep-like':>12}{'vs attn':>9}{'step cpu-ms':>13}{'vs attn':>9}")
  base = None
  for name, (compile_s, _, _) in calls.items():
    steps, probes, cpu = (sorted(t) for t in times[name])
    step_min, step_med, probe_min = steps[0], steps[len(steps) // 2], probes[0]
    rates = (runs / step_min, runs / step_med, runs * 50 / (50 * step_min + probe_min),
             runs / cpu[0])
    base = base or rates
    print(f"{name:<18}{compile_s:>10.1f}{step_min * 1e3:>8.1f} /{step_med * 1e3:>6.1f}"
          f"{probe_min * 1e3:>10.1f}{rates[0]:>13.0f}{rates[0] / base[0]:>7.2f} /"
          f"{rates[1] / base[1]:>4.2f}{rates[2]:>12.0f}{rates[2] / base[2]:>9.2f}"
          f"{cpu[0] * 1e3:>13.1f}{rates[3] / base[3]:>9.2f}")


def _gpu():
  from rc_jax.routers import scan, ssm  # pylint: disable=g-import-not-at-top
  runs, batch, t, c, n, heads, rank = _RUNS.value, 64, 128, 256, 16, 8, 8
  keys = jax.random.split(jax.random.key(0), runs)
  params = jax.vmap(lambda k: ssm.init_ssm_params(k, c, n, dt_rank=rank))(keys)
  x = jax.random.normal(jax.random.key(1), (runs, batch, t, c))
  w = jax.random.normal(jax.random.key(2), (batch, t, c))
  print(f"{jax.devices()[0].device_kind}: SSM layer fwd+bwd, {runs} runs x batch {batch}, T {t}, "
        f"C {c}, N {n}")
  for backend in scan.BACKENDS:
    def loss(x, p, backend=backend):
      return jnp.sum(w * ssm.selective_ssm(x, p, brake=0.1, backend=backend,
                                           return_weights=False)[0])
    f = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))
    start = time.perf_counter()
    jax.block_until_ready(f(x, params))
    compile_s = time.perf_counter() - start
    step_ms = _median_seconds(f, x, params) * 1e3
    print(f"  {backend:<12} compile {compile_s:6.1f} s   fwd+bwd {step_ms:8.2f} ms")
  probe_x = x[:, :16]
  for content in (True, False):
    routing = jax.jit(jax.vmap(lambda x, p, content=content: ssm.selective_ssm(
        x, p, brake=0.1, n_heads=heads, content=content)[1]))
    temp = routing.lower(probe_x, params).compile().memory_analysis().temp_size_in_bytes
    print(f"  routing probe (16 seqs, content={content}): "
          f"{_median_seconds(routing, probe_x, params) * 1e3:8.2f} ms for {runs} runs, "
          f"temp {temp / 2**20:.0f} MiB")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _cpu() if _PART.value == "cpu" else _gpu()


if __name__ == "__main__":
  app.run(main)

"""Side-by-side benchmark of the sweep engine, jitted single runs and a plain PyTorch loop.

    python -m benchmarks.sweep [--quick] [--shapes=cpu,w64] [--runs=1,4,16,64]
        [--impls=engine,sequential,torch] [--modes=vmap,map:4,sequential]
        [--out=benchmarks/RESULTS.md]

For each shape (`cpu`: the attention cpu preset, width 32 / seq 32; `w64`: width 64 / seq 64;
both batch 16, depth 2, 4 heads, bigram-backcopy, AdamW + clipping, collapse metrics every 50
steps) and each number of runs N, it trains the same N runs (seeds x brakes) three ways, each in a
fresh process with a fresh (cold) compilation cache:

  engine      `run_sweep` as the launcher runs it (default `execution.mode="auto"`, two chunks,
              checkpoints and output files included);
  sequential  the same runs one after another, `jax.jit(trainer.train)` compiled once;
  torch       `benchmarks/torch_lm.py`: the same model, initialisation, optimiser, batches (rc_jax's
              sampler, converted) and in-loop measurement in PyTorch (the faster of 1 thread and
              PyTorch's default, measured at the start).

Reported per cell: steady-state run-steps/s (the engine: its chunks, checkpoints included, as
`run_sweep` compiles ahead of the first call; sequential: the runs after the compilation; torch:
the training loops), end-to-end wall time (compilation included; projected to the default sweep's
steps, the cpu preset's `train.steps`, as end-to-end + the remaining steps at the steady rate),
compilation seconds, peak resident memory, and model FLOP/s (analytic,
`shapes.train_flops_per_run_step`) against the float32 matmul peak measured in the same process.
Also: the engine under explicit execution modes (against auto), its metrics overhead (a
measurement every 50 steps vs once per chunk, by linearity), its compilation cold vs warm (a second
process on the same cache), and repeats of the headline cell (cpu shape, 16 runs: the default
sweep) whose medians give the closing line

    engine/torch=X.XX engine/sequential=Y.YY metrics_overhead=Z%

(steady-state run-steps/s ratios). The machine's load is recorded: on a shared machine numbers
move, ratios measured side by side less so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

from rc_jax.engine import config_lib

DEFAULT_STEPS = config_lib.base_config("attention", "cpu").train.steps  # the default sweep's
HEADLINE = ("cpu", 16)


def _engine_chunk(steps: int) -> int:
  """The engine's checkpoint interval: two chunks (the first holds the compilation), so checkpoint
  saves cost what they cost in a default sweep (4 chunks of 500 steps), not 10x that."""
  return max(50, steps // 2 // 50 * 50)


def _worker(impl: str, shape: str, runs: int, steps: int, *, cache_dir: str, extra=()) -> dict:
  if impl == "engine":
    extra = (f"--chunk_steps={_engine_chunk(steps)}",) + tuple(extra)
  cmd = [sys.executable, "-m", "benchmarks.workers", f"--impl={impl}", f"--shape={shape}",
         f"--runs={runs}", f"--steps={steps}", f"--cache_dir={cache_dir}", *extra]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=_ROOT, env=env, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
    raise RuntimeError(f"worker {' '.join(cmd[2:])} failed (exit {proc.returncode}):\n{tail}")
  result = json.loads(lines[-1][len("RESULT "):])
  label = impl + (" " + result["mode"] if impl == "engine" else "")
  print(f"  {label:<16} {shape:<4} N={runs:<3} {result.get('steady_run_steps_per_s', 0):8.1f} "
        f"run-steps/s steady, {result.get('wall_s', 0):7.1f}s end to end, load "
        f"{result['load_start']:.1f}", flush=True)
  return result


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh_cache(tmp: str) -> str:
  return tempfile.mkdtemp(prefix="cache-", dir=tmp)


def _projected(r: dict) -> float:
  """End-to-end wall for DEFAULT_STEPS steps: measured + the remaining steps at the steady rate."""
  return r["wall_s"] + (DEFAULT_STEPS - r["steps"]) * r["runs"] / r["steady_run_steps_per_s"]


def _mfu(r: dict) -> float:
  return r["steady_run_steps_per_s"] * r["flops_per_run_step"] / r["matmul_peak_flops"]


def _median_cell(results: list[dict]) -> dict:
  """Per-key medians of repeated measurements of one cell (numbers only; the rest from the first)."""
  cell = dict(results[0])
  for key, value in cell.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      cell[key] = statistics.median(r[key] for r in results)
  cell["repeats"] = len(results)
  return cell


def _machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  versions = {"python": platform.python_version(), "jax": jax.__version__}
  for name in ("jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      versions[name] = __import__(name).__version__
    except ImportError:
      versions[name] = "-"
  cpu = "?"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  return {"cpu": cpu, "cores": os.cpu_count(), "device": f"{len(devices)} x {devices[0].device_kind}",
          "platform": platform.platform(), "versions": versions}


def _table(cells: dict, shape: str, runs_list, impls) -> list[str]:
  rows = [f"| N | impl | steady run-steps/s | vs torch | end to end s (steps) | projected "
          f"{DEFAULT_STEPS} steps s | vs torch | compile s | peak RSS MiB | GFLOP/s "
          "| % of matmul peak (GFLOP/s) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
  for runs in runs_list:
    torch_cell = cells.get((shape, runs, "torch"))
    for impl in impls:
      r = cells.get((shape, runs, impl))
      if r is None:
        continue
      speed = r["steady_run_steps_per_s"]
      vs = f"{speed / torch_cell['steady_run_steps_per_s']:.2f}x" if torch_cell else "-"
      vs_e2e = f"{_projected(torch_cell) / _projected(r):.2f}x" if torch_cell else "-"
      compile_s = r.get("compile_s", r.get("setup_s", 0.0)) + r.get("lower_s", 0.0)
      reps = f" (median of {r['repeats']})" if r.get("repeats", 1) > 1 else ""
      rows.append(
          f"| {runs} | {impl}{reps} | {speed:.1f} | {vs} | {r['wall_s']:.1f} ({r['steps']}) | "
          f"{_projected(r):.0f} | {vs_e2e} | {compile_s:.1f} | {r['peak_rss_mib']:.0f} | "
          f"{speed * r['flops_per_run_step'] / 1e9:.2f} | {100 * _mfu(r):.1f}% "
          f"({r['matmul_peak_flops'] / 1e9:.0f}) |")
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="N = 1, 4, 16, 100 steps per shape, one repeat of the headline")
  parser.add_argument("--shapes", default="cpu,w64")
  parser.add_argument("--runs", default=None, help="comma-separated run counts (default 1,4,16,64)")
  parser.add_argument("--impls", default="engine,sequential,torch")
  parser.add_argument("--steps_cpu", type=int, default=None, help="steps at the cpu shape (200)")
  parser.add_argument("--steps_w64", type=int, default=None, help="steps at width 64 (100)")
  parser.add_argument("--repeats", type=int, default=None, help="repeats of the headline cell (3)")
  parser.add_argument("--modes", default=None,
                      help="explicit engine modes to compare with auto at N=16, e.g. vmap,map:4,"
                           "sequential (default: those three; '' for none)")
  parser.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "RESULTS.md"),
                      help="results file to regenerate ('' for none); raw results go to the same "
                           "name with .json")
  args = parser.parse_args(argv)
  shapes_list = [s for s in args.shapes.split(",") if s]
  runs_list = [int(n) for n in (args.runs or ("1,4,16" if args.quick else "1,4,16,64")).split(",")]
  impls = [i for i in args.impls.split(",") if i]
  steps = {"cpu": args.steps_cpu or 100 if args.quick else args.steps_cpu or 200,
           "w64": args.steps_w64 or 100}
  repeats = args.repeats or (1 if args.quick else 3)
  modes = [m for m in (args.modes if args.modes is not None else
                       ("" if args.quick else "vmap,map:4,sequential")).split(",") if m]
  load_start = os.getloadavg()
  tmp = tempfile.mkdtemp(prefix="rc_jax_bench-")
  cells, extra = {}, {}
  try:
    for shape in shapes_list:
      for runs in runs_list:
        headline = (shape, runs) == HEADLINE
        reps = {impl: [] for impl in impls}
        for _ in range(repeats if headline else 1):
          for impl in impls:  # alternating, so slow drifts in load hit every impl alike
            cache = _fresh_cache(tmp)
            reps[impl].append(_worker(impl, shape, runs, steps[shape], cache_dir=cache))
            if headline and impl == "engine" and "warm" not in extra:
              extra["warm"] = _worker(impl, shape, runs, steps[shape], cache_dir=cache)
              extra["cold"] = reps[impl][-1]
        for impl in impls:
          cells[(shape, runs, impl)] = _median_cell(reps[impl])
      if "engine" in impls and HEADLINE[1] in runs_list:
        for mode in modes:  # the engine under explicit execution modes, against auto
          name, _, group = mode.partition(":")
          extra.setdefault("modes", {})[(shape, mode)] = _worker(
              "engine", shape, HEADLINE[1], steps[shape], cache_dir=_fresh_cache(tmp),
              extra=(f"--mode={name}",) + ((f"--group={group}",) if group else ()))
      if "engine" in impls and (shape, HEADLINE[1]) == HEADLINE:
        extra["overhead"] = _worker("overhead", shape, HEADLINE[1], 200, cache_dir="off",
                                    extra=("--chunk_steps=200",))
        if "torch" in impls:
          extra["torch_off"] = _worker("torch", shape, HEADLINE[1], steps[shape], cache_dir="off",
                                       extra=("--metrics_off",))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  load_end = os.getloadavg()

  lines = _report(cells, extra, shapes_list, runs_list, impls, steps, repeats, load_start,
                  load_end, argv if argv is not None else sys.argv[1:])
  print("\n".join(lines))
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")
    raw = {"cells": [dict(cell, key=list(key)) for key, cell in cells.items()],
           "extra": {k: v for k, v in extra.items() if k != "modes"},
           "modes": [dict(r, key=list(k)) for k, r in extra.get("modes", {}).items()]}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
      json.dump(raw, f, indent=1, sort_keys=True)


def _report(cells, extra, shapes_list, runs_list, impls, steps, repeats, load_start, load_end,
            argv) -> list[str]:
  machine = _machine()
  lines = ["# Sweep benchmark", "",
           f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by "
           f"`python -m benchmarks.sweep {' '.join(argv)}`.", "",
           f"- machine: {machine['cpu']}, {machine['cores']} cores; JAX devices: {machine['device']};"
           f" {machine['platform']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
           f"- load average (1 min) at start {load_start[0]:.1f}, at end {load_end[0]:.1f}; every "
           f"cell records its own (`load_start`)",
           f"- steps per shape: {steps}; the headline cell {HEADLINE} is the median of {repeats} "
           f"alternating repeats", ""]
  for shape in shapes_list:
    lines += [f"## {shape}", ""] + _table(cells, shape, runs_list, impls) + [""]
  head = {impl: cells.get(HEADLINE + (impl,)) for impl in impls}
  overhead = extra.get("overhead")
  summary = []
  if "cold" in extra:
    cold, warm = extra["cold"], extra["warm"]
    summary.append(
        f"- compilation of the headline sweep in a new process: cold {cold['compile_s']:.1f}s XLA "
        f"+ {cold['lower_s']:.1f}s lowering ({cold['backend_compiles']} programs, "
        f"{cold['cache_misses']} cache misses); warm {warm['compile_s']:.1f}s XLA "
        f"({warm['cache_misses']} misses, {warm['cache_hits']} hits) + {warm['lower_s']:.1f}s "
        f"lowering; end to end {cold['wall_s']:.1f}s cold vs {warm['wall_s']:.1f}s warm")
    summary.append(f"- auto plan: {cold.get('plan', '')}")
  if overhead:
    summary.append(
        f"- engine metrics overhead at {HEADLINE}: chunk of 200 steps "
        f"{overhead['chunk_s_metrics_every_log']:.2f}s with {overhead['measures_per_chunk']} measurements vs "
        f"{overhead['chunk_s_metrics_once']:.2f}s with one -> {overhead['measure_s'] * 1e3:.0f} ms "
        f"per measurement, overhead {100 * overhead['metrics_overhead']:.1f}% of training")
  if extra.get("torch_off") and head.get("torch"):
    off, on = extra["torch_off"], head["torch"]
    on_rate, off_rate = on["steady_run_steps_per_s"], off["steady_run_steps_per_s"]
    summary.append(f"- torch metrics overhead: {100 * (off_rate / on_rate - 1):.1f}% "
                   f"({on_rate:.1f} vs {off_rate:.1f} run-steps/s)")
  for shape in shapes_list:
    auto = cells.get((shape, HEADLINE[1], "engine"))
    mode_cells = {m: r for (sh, m), r in extra.get("modes", {}).items() if sh == shape}
    if auto and mode_cells:
      best = max(r["steady_run_steps_per_s"] for r in mode_cells.values())
      summary.append(
          f"- execution modes at {shape}, N={HEADLINE[1]} (steady run-steps/s): auto "
          f"{auto['steady_run_steps_per_s']:.1f}, " + ", ".join(
              f"{m} {r['steady_run_steps_per_s']:.1f}" for m, r in mode_cells.items())
          + f"; auto / best explicit = {auto['steady_run_steps_per_s'] / best:.2f}")
  if summary:
    lines += ["## Summary", ""] + summary + [""]
  if os.path.exists(os.path.join(_ROOT, "benchmarks", "RESULTS_H200.md")):
    lines += ["Accelerator (engine vs sequential at N = 64, MFU): `benchmarks/RESULTS_H200.md`.", ""]
  ratio = lambda a, b: (head[a]["steady_run_steps_per_s"] / head[b]["steady_run_steps_per_s"]
                        if head.get(a) and head.get(b) else float("nan"))
  overhead_pct = 100 * overhead["metrics_overhead"] if overhead else float("nan")
  lines.append(f"engine/torch={ratio('engine', 'torch'):.2f} "
               f"engine/sequential={ratio('engine', 'sequential'):.2f} "
               f"metrics_overhead={overhead_pct:.1f}%")
  return lines


if __name__ == "__main__":
  main()

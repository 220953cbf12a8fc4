"""The `auto` memory plan of each family's `paper` preset, without running anything.

    python -m benchmarks.memory_plans [--runs=128] [--budget_gib=16] [--families=attention,ssm]

For each family it compiles the paper chunk for 1 and 2 vmapped runs on this machine's first device
(on CPU about a minute each), fits `rc_jax.memory_plan.PerRun` and prints the plan for `--runs` runs
on one device with a `--budget_gib` budget: all runs vmapped if they fit, else `map` with the largest
balanced group that fits.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import jax

from rc_jax import memory_plan

FAMILIES = ("attention", "graph", "ssm", "rwkv", "depth")
_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def paper_config(family: str):
  spec = importlib.util.spec_from_file_location(f"config_{family}",
                                                os.path.join(_CONFIGS, f"{family}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("paper")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=128)
  parser.add_argument("--budget_gib", type=float, default=16.0)
  parser.add_argument("--families", default=",".join(FAMILIES))
  args = parser.parse_args(argv)
  gib = memory_plan.GIB
  print(f"| family | temp / run GiB | state / run MiB | fixed GiB | {args.runs} runs vmapped GiB | "
        f"plan ({args.budget_gib:g} GiB) | planned peak GiB | compile s |")
  print("|---|---|---|---|---|---|---|---|")
  for family in args.families.split(","):
    config = paper_config(family)
    config.execution.memory_budget_gib = args.budget_gib
    t0 = time.perf_counter()
    try:
      plan = memory_plan.plan_config(config, jax.devices()[:1], n_runs=args.runs)
    except memory_plan.MemoryBudgetError as err:
      print(f"| {family} | refused: {err} |")
      continue
    per_run = plan.per_run
    print(f"| {family} | {per_run.temp / gib:.3f} | {per_run.state / 2**20:.1f} | "
          f"{per_run.fixed / gib:.3f} | {plan.vmap_peak / gib:.1f} | {plan.mode}, groups of "
          f"{plan.group} | {plan.peak / gib:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
  main()

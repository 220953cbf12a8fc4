"""Benchmark: one sweep under each execution mode, each in its own process (for its peak memory).

    python benchmarks/sweep_speed.py [--config=configs/attention.py:cpu] [--modes=vmap,sequential]

Prints, per mode: wall time, compile time (first init + first chunk, which includes one chunk of
work), steady-state training time, run-steps/s, peak resident memory; then each mode's throughput as
a ratio to the first mode's, all measured in this one invocation.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs",
                           "attention.py") + ":cpu", "Sweep config to time.", lock_config=True)
_MODES = flags.DEFINE_list("modes", ["vmap", "sequential"], "Execution modes to compare.")
_CHILD = flags.DEFINE_string("child_mode", None, "Internal: run one mode and print JSON.")


def _run_one(config, mode: str) -> dict:
  from rc_jax import sweep  # pylint: disable=g-import-not-at-top  (after flags: JAX starts here)
  config.execution.mode = mode
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    result = sweep.run_sweep(config, workdir)
    wall = time.perf_counter() - t0
  timings = result.timings
  runs = len(result.runs)
  chunk_steps, steps = config.train.chunk_steps, config.train.steps
  steady_steps = steps - chunk_steps  # the first chunk is timed together with its compilation
  return {
      "mode": mode, "runs": runs, "steps": steps, "wall_s": wall,
      "compile_plus_first_chunk_s": timings["compile_init_s"] + timings["compile_chunk_s"],
      "steady_train_s": timings["train_s"],
      "run_steps_per_s": runs * steady_steps / timings["train_s"] if timings["train_s"] else None,
      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if _CHILD.value:
    print(json.dumps(_run_one(config, _CHILD.value)))
    return
  config_args = [a for a in sys.argv[1:] if a.startswith("--config")]
  results = []
  for mode in _MODES.value:
    cmd = [sys.executable, os.path.abspath(__file__), f"--child_mode={mode}", *config_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    results.append(json.loads(out.stdout.strip().splitlines()[-1]))
  print(f"{config.router} sweep: {results[0]['runs']} runs x {results[0]['steps']} steps, "
        f"train.chunk_steps={config.train.chunk_steps}")
  print(f"{'mode':<11}{'wall s':>8}{'compile+1st chunk s':>21}{'steady s':>10}{'run-steps/s':>13}"
        f"{'peak MiB':>10}{'speed vs ' + results[0]['mode']:>16}")
  base = results[0]["run_steps_per_s"]
  for r in results:
    ratio = r["run_steps_per_s"] / base if base and r["run_steps_per_s"] else float("nan")
    print(f"{r['mode']:<11}{r['wall_s']:>8.1f}{r['compile_plus_first_chunk_s']:>21.1f}"
          f"{r['steady_train_s']:>10.1f}{r['run_steps_per_s'] or float('nan'):>13.0f}"
          f"{r['peak_rss_mib']:>10.0f}{ratio:>16.2f}")


if __name__ == "__main__":
  app.run(main)

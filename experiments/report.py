"""Runs the paper's experiments (reusing finished sweeps) and writes DIR/REPORT.md.

    python experiments/report.py --preset=cpu --workdir=runs/report [--publish=results/cpu]

Each sweep of `rc_jax.report.suite` goes to DIR/<sweep name> (resumable, exactly as
`experiments/sweep.py` would run it); the report evaluates every claim by the rules of
`rc_jax.report.claims` with the margins of `configs/report.py`. `--publish` copies REPORT.md, the
figures and the tables (no checkpoints) to another directory.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import time

from absl import app, flags, logging

from rc_jax.engine import sweep as engine_sweep
from rc_jax.measurement import metrics
from rc_jax.report import claims, collect, controls, suite, writer

_PRESET = flags.DEFINE_enum("preset", "cpu", ["tiny", "cpu", "gpu", "paper"],
                            "Size of every sweep.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweeps and the report "
                               "(default: runs/report_<preset>).")
_PUBLISH = flags.DEFINE_string("publish", None, "Also copy REPORT.md, figures/ and tables/ here.")
_ONLY = flags.DEFINE_list("only", None, "Run only these sweeps (names as in the report), in the "
                         "order named; no report.")
_REUSE_ONLY = flags.DEFINE_bool("reuse_only", False, "Train nothing: write the report from the "
                                "finished sweeps in --workdir; the others read as not run.")
_SVD_METHOD = flags.DEFINE_enum("svd_method", None, list(metrics.RANK_METHODS),
                                "execution.svd_method of every sweep (default: the configs'; "
                                "an execution key: the same numbers to ~1e-7, resumable).")
_COMPILE_WORKERS = flags.DEFINE_integer("compile_workers", 1, "Compile this many sweeps' programs "
                                        "at once before training (XLA compiles outside the GIL: "
                                        "on a 16-core accelerator host, 16).", lower_bound=1)


def _publish(report_dir: str, target: str) -> None:
  os.makedirs(target, exist_ok=True)
  shutil.copyfile(os.path.join(report_dir, "REPORT.md"), os.path.join(target, "REPORT.md"))
  for sub in ("figures", "tables"):
    shutil.copytree(os.path.join(report_dir, sub), os.path.join(target, sub), dirs_exist_ok=True)


def _config(sweep, preset: str):
  """The sweep's config, with `--svd_method` applied."""
  config = sweep.config(preset)
  if _SVD_METHOD.value:
    config.execution.svd_method = _SVD_METHOD.value
  return config


def _compile_ahead(sweeps, preset: str, workdir: str, workers: int) -> dict:
  """Starts compiling the programs of every sweep not finished yet, `workers` at a time, and returns
  `{sweep name: future}`; the first sweep trains as soon as its own programs are ready (waiting on
  its future), finding them in `run_sweep`'s in-process cache while the others still compile."""
  todo = [s for s in sweeps if not os.path.exists(os.path.join(workdir, s.name,
                                                               collect.VALUES_FILE))]
  pool = concurrent.futures.ThreadPoolExecutor(workers)
  futures = {s.name: pool.submit(engine_sweep.compiled_for, _config(s, preset)) for s in todo}
  pool.shutdown(wait=False)
  return futures


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  preset = _PRESET.value
  workdir = _WORKDIR.value or os.path.join("runs", f"report_{preset}")
  sweeps = suite.all_sweeps(preset)
  if _ONLY.value:
    unknown = sorted(set(_ONLY.value) - {s.name for s in sweeps})
    if unknown:
      print(f"error: --only names unknown sweeps {unknown}; known: "
            f"{', '.join(s.name for s in sweeps)}", file=sys.stderr)
      sys.exit(2)
    by_name = {s.name: s for s in sweeps}
    sweeps = [by_name[name] for name in dict.fromkeys(_ONLY.value)]  # in the order named
  cfg = suite.load_report_config()
  compiling = {}
  if _COMPILE_WORKERS.value > 1 and not _REUSE_ONLY.value:
    compiling = _compile_ahead(sweeps, preset, workdir, _COMPILE_WORKERS.value)
  values, commands = {}, {}
  for index, sweep in enumerate(sweeps):
    sweep_dir = os.path.join(workdir, sweep.name)
    commands[sweep.name] = (sweep.command(preset, workdir), sweep_dir)
    if _REUSE_ONLY.value and not os.path.exists(os.path.join(sweep_dir, collect.VALUES_FILE)):
      logging.warning("%s not run: its claims read inconclusive", sweep.name)
      continue
    t0 = time.perf_counter()
    if sweep.name in compiling:
      compiling[sweep.name].result()  # raises this sweep's compilation error, if any
    values[sweep.name] = collect.load_or_collect(_config(sweep, preset), sweep_dir,
                                                 cfg.concentration.metric,
                                                 cfg.concentration.layer_reduce)
    logging.info("[%d/%d] %s ready in %.0fs", index + 1, len(sweeps), sweep.name,
                 time.perf_counter() - t0)
  if _ONLY.value:
    return
  control_rows = (controls.battery(cfg) + [controls.minilm_control(cfg)]
                  + controls.trained_controls(values, cfg))
  unexpected = [f"{r['family']} {r['component']}: {r['case']}" for r in control_rows
                if not r["passed"]]
  for row in unexpected:
    logging.warning("control not as expected: %s", row)
  evaluated = claims.evaluate(values, cfg)
  command = f"python experiments/report.py --preset={preset} --workdir={workdir}"
  path = writer.write_report(workdir, preset, values, evaluated, cfg, commands, command,
                             control_rows)
  print(f"report: {path}")
  print(f"  controls: {len(control_rows) - len(unexpected)} of {len(control_rows)} as expected")
  for claim in evaluated:
    print(f"  {claim['verdict']:>15}  {claim['title']}")
  if _PUBLISH.value:
    _publish(workdir, _PUBLISH.value)
    print(f"published to {_PUBLISH.value}")


if __name__ == "__main__":
  app.run(main)

"""Sweep configs: the shared schema, presets, validation and the run grid.

A config (`ml_collections.ConfigDict`) has these sections:

  router      "attention" | "graph" | "ssm" | "rwkv" | "depth"
  model       width, depth, n_heads, mlp_ratio, score, positions, state_size, expand, selective,
              ssm_backend, max_hops; content (False: the router's content score is removed, the
              positional-prior null model); switches that close or open escape routes:
              normalise ("softmax" | "sigmoid", attention), brake_slopes ("shared" | "alibi",
              attention), conv_width (SSM depthwise conv, 0 = off), dt_rank (SSM low-rank Delta,
              0 = ceil(width / 16) as in Mamba), gate (SSM output gate / RWKV sigma(r)),
              token_shift and bonus (RWKV)
  task        name (+ its sizes and options), seed (fixes the task and the probe batch)
  train       steps, chunk_steps (checkpoint interval), log_every, b1, b2, weight_decay, grad_clip,
              warmup_steps, divergence_nats (a run whose loss exceeds its initial loss by more is
              diverged and frozen, see rc_jax/engine/train.py; inf: only non-finite values count)
  sweep       seeds, brakes, learning_rates: the grid, flattened to one run axis
  execution   mode ("auto" | "vmap" | "map" | "sequential"), chunk (runs per vmapped group for
              "map"), memory_budget_gib (per-device budget for "auto"; 0 = the device's limit, or
              8 GiB on CPU; see rc_jax.engine.memory_plan), svd_method (how the in-step
              effective ranks get their singular values, `metrics.singular_values`: "svd" |
              "jacobi" (GPU) | "gram64" (float64; needs jax_enable_x64): the same quantity to ~1e-7)
  metrics     sink_eps, hub_factor, onset_metric, onset_threshold, onset_rise (the onset must also
              be this far above the run's own step-0 value; `metrics.onset_step`),
              onset_layer_reduce
  checkpoint  max_to_keep (>= 2: the previous checkpoint is the fallback for a damaged latest one)
  output      tensorboard (False: also write TensorBoard event files per run, `outputs.tensorboard`)

`execution`, `checkpoint` and `output` never change the numbers beyond float32 rounding: a workdir
resumes (or grows, see `rc_jax.engine.grid`) whatever their values.

`configs/<router>.py` files call `sweep_config(router, arg)`: `arg` is a preset optionally followed
by comma-separated variants (`"cpu,recall,prior"`), each a named set of overrides (`VARIANTS`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import math
import os
from typing import Callable

import jax
import jaxlib
import ml_collections
import numpy as np

from rc_jax import tasks
from rc_jax.measurement import metrics
from rc_jax.measurement.stats import ONSET_LAYER_REDUCTIONS
from rc_jax.engine.problem import ROUTERS

PRESETS = ("tiny", "cpu", "gpu", "paper")
EXECUTION_MODES = ("auto", "vmap", "map", "sequential")
SCORES = ("dot", "distance", "cosine", "gat", "gatv2")
NORMALISATIONS = ("softmax", "sigmoid")
BRAKE_SLOPES = ("shared", "alibi")
POSITIONS = ("learned", "rope", "none")
GRAPH_TASKS = ("sbm",)


def base_config(router: str, preset: str) -> ml_collections.ConfigDict:
  """Defaults shared by every router; `preset` sets the sizes."""
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
  c = ml_collections.ConfigDict()
  c.router = router
  c.model = dict(width=32, depth=2, n_heads=4, mlp_ratio=4, score="dot", positions="learned",
                 state_size=8, expand=2, selective=True, ssm_backend="scan", max_hops=2,
                 content=True, normalise="softmax", brake_slopes="shared", conv_width=4, dt_rank=0,
                 gate=True, token_shift=True, bonus=True)
  c.task = dict(name="bigram_backcopy", vocab_size=32, seq_len=32, batch_size=16,
                probe_batch_size=8, seed=0, path="", options=dict(n_triggers=3))
  c.train = dict(steps=1000, chunk_steps=500, log_every=50, b1=0.9, b2=0.98, weight_decay=0.0,
                 grad_clip=1.0, warmup_steps=0, divergence_nats=10.0)
  # 8 seeds: the report's paired one-sided t bound over n seeds is t_{0.95, n-1} sd / sqrt(n), 0.67
  # sd at n = 8 against 1.69 sd at n = 3 (the report states each component's detectable effect)
  c.sweep = dict(seeds=tuple(range(8)), brakes=(0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                 learning_rates=(3e-3,))
  c.execution = dict(mode="auto", chunk=8, memory_budget_gib=0.0, svd_method="svd")
  # onset, the same for every family: in some layer, some head routes more than 0.1 of its mass to
  # one source beyond the positional prior (`metrics.hub_excess`), at least 0.05 more than the run
  # did at initialisation (configs/report.py: how 0.1 was calibrated on initialisations)
  c.metrics = dict(sink_eps=0.3, hub_factor=2.0, onset_metric="hub_excess",
                   onset_threshold=0.1, onset_rise=0.05, onset_layer_reduce="max")
  c.checkpoint = dict(max_to_keep=2)
  c.output = dict(tensorboard=False)
  if preset == "tiny":
    c.model.update(width=16, depth=2, n_heads=2, state_size=4)
    c.task.update(vocab_size=16, seq_len=16, batch_size=4, probe_batch_size=2)
    c.train.update(steps=8, chunk_steps=4, log_every=2)
    c.sweep.update(seeds=(0, 1), brakes=(0.0, 0.5), learning_rates=(3e-3,))
  elif preset == "gpu":
    # the cpu model and grid on 32x the tokens per run (64 x 32 x 8000 = 16.4M against 0.5M),
    # sized for one H200 in one developer session (benchmarks/GPU_PLAN.md)
    c.task.update(batch_size=64, probe_batch_size=16)
    c.train.update(steps=8000, chunk_steps=2000, log_every=200)
  elif preset == "paper":
    c.model.update(width=128, depth=4, n_heads=8, state_size=16)
    c.task.update(vocab_size=256, seq_len=128, batch_size=64, probe_batch_size=16)
    c.train.update(steps=20000, chunk_steps=2000, log_every=200, warmup_steps=200)
    brakes = tuple(np.round(np.geomspace(1e-3, 2.0, 15), 4)) + (0.0,)
    c.sweep.update(seeds=(0, 1, 2, 3), brakes=brakes, learning_rates=(1e-3, 3e-3))
  return c


SEQUENCE_ROUTERS = ("attention", "ssm", "rwkv", "depth")


def _set_task(name: str, options) -> Callable:
  """A variant edit switching the sequence task (`options(config) -> dict` of task options)."""
  def edit(config):
    config.task.name = name
    config.task.options = ml_collections.ConfigDict(options(config))
  return edit


def _guo(config) -> None:
  """Guo et al. 2024's Bigram-Backcopy transformer and optimiser (their BBM scripts: d = 256, one
  head, batch 512, AdamW lr 3e-4, weight decay 1e-4), two layers; scaled down for one device
  session from their 10k steps to 4000 steps, 4 seeds (benchmarks/GPU_PLAN.md)."""
  config.model.update(width=256, depth=2, n_heads=1)
  config.task.update(vocab_size=64, seq_len=64, batch_size=512)
  config.train.update(steps=4000, chunk_steps=1000, log_every=200, weight_decay=1e-4)
  config.sweep.update(seeds=(0, 1, 2, 3), learning_rates=(3e-4,))


# variant -> (routers it applies to, function editing the config in place)
VARIANTS = {
    "backcopy": (SEQUENCE_ROUTERS, _set_task("bigram_backcopy", lambda c: {"n_triggers": 3})),
    # enough pairs to make retrieval the task, room left for about two queries per pair
    "recall": (SEQUENCE_ROUTERS, _set_task("associative_recall",
                                           lambda c: {"n_pairs": max(1, c.task.seq_len // 5)})),
    "prior": (ROUTERS, lambda c: c.model.update(content=False)),
    # the grid at brake 0 alone: nulls and controls compared with a trained sweep's brake-0 runs
    "brake0": (ROUTERS, lambda c: c.sweep.update(brakes=(0.0,))),
    "cosine": (("attention",), lambda c: c.model.update(score="cosine")),
    "distance": (("attention", "graph"), lambda c: c.model.update(score="distance")),
    "sigmoid": (("attention",), lambda c: c.model.update(normalise="sigmoid")),
    "guo": (("attention",), _guo),
    "frozen": (("ssm",), lambda c: c.model.update(selective=False)),
    "noescape": (("ssm", "rwkv"), lambda c: c.model.update(
        **({"gate": False, "conv_width": 0} if c.router == "ssm" else
           {"gate": False, "token_shift": False, "bonus": False}))),
}


def parse_config_arg(arg: str | None, default_preset: str = "cpu") -> tuple[str, tuple[str, ...]]:
  """`"cpu,recall,prior"` -> `("cpu", ("recall", "prior"))`; empty -> the default preset."""
  parts = [part.strip() for part in (arg or "").split(",")]
  preset = parts[0] or default_preset
  return preset, tuple(part for part in parts[1:] if part)


def apply_variants(config, variants) -> ml_collections.ConfigDict:
  """Applies the named `VARIANTS` in order; ValueError naming an unknown or inapplicable one."""
  for name in variants:
    if name not in VARIANTS:
      raise ValueError(f"unknown config variant {name!r}; known: {', '.join(VARIANTS)}")
    routers, edit = VARIANTS[name]
    if config.router not in routers:
      raise ValueError(f"config variant {name!r} applies to {', '.join(routers)}, not "
                       f"router={config.router!r}")
    edit(config)
  return config


JAXLIB_VERSION = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])


def group_runs_on_old_jaxlib(config, preset: str) -> None:
  """With jaxlib < 0.12 on a 2-core CPU, the first execution of 12 or more vmapped RWKV runs (24
  SSM runs) deadlocks (every thread idle on a futex) and groups of 4 run: below the `paper` preset,
  such configs execute `map` in groups of 4 when JAX can only run on the CPU (with an accelerator
  they keep `auto`). Fixed in jaxlib 0.12 (`tests/rwkv_test.py` runs 16 vmapped runs under a
  timeout there). Execution settings do not change a config's fingerprint."""
  if preset != "paper" and JAXLIB_VERSION < (0, 12) and _cpu_only():
    config.execution.update(mode="map", chunk=4)


def _cpu_only() -> bool:
  """Whether JAX runs on the CPU here, decided without starting a backend (a multi-process launch
  parses its config before `jax.distributed.initialize`): `JAX_PLATFORMS` names the CPU first, or
  it is unset and no accelerator plugin is installed (no `jax_plugins` module or entry point, no
  libtpu)."""
  platforms = jax.config.jax_platforms
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return (importlib.util.find_spec("jax_plugins") is None and
          not importlib.metadata.entry_points(group="jax_plugins") and
          importlib.util.find_spec("libtpu") is None)


def sweep_config(router: str, arg: str | None, adjust=None) -> ml_collections.ConfigDict:
  """`base_config(router, preset)`, then `adjust(config, preset)` (the router's own defaults), then
  the variants named in `arg` (see `parse_config_arg`)."""
  preset, variants = parse_config_arg(arg)
  config = base_config(router, preset)
  if adjust is not None:
    adjust(config, preset)
  return apply_variants(config, variants)


def _fail(key: str, message: str):
  raise ValueError(f"config.{key}: {message}")


def _check_choice(config, key: str, choices) -> None:
  section, name = key.split(".") if "." in key else (None, key)
  value = config[section][name] if section else config[name]
  if value not in choices:
    _fail(key, f"{value!r} is not one of {tuple(choices)}")


def _check_positive_ints(section, prefix: str, names) -> None:
  for name in names:
    value = section[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      _fail(f"{prefix}.{name}", f"must be an integer >= 1, got {value!r}")


def _as_floats(values) -> tuple[float, ...]:
  """Numbers as floats; a string such as "(nan,0.0)" (how a --config override with nan or inf
  arrives) is split at commas first."""
  if isinstance(values, str) or (len(values) == 1 and isinstance(values[0], str)):
    text = values if isinstance(values, str) else values[0]
    values = [v for v in text.strip().strip("()[]").split(",") if v.strip()]
  return tuple(float(v) for v in values)


def _check_numbers(key: str, values, low: float, *, strict: bool = False) -> tuple[float, ...]:
  try:
    values = _as_floats(values)
  except (TypeError, ValueError):
    _fail(key, f"must be a sequence of numbers, got {values!r}")
  if not values:
    _fail(key, "must not be empty")
  for v in values:
    if not math.isfinite(v) or v < low or (strict and v == low):
      _fail(key, f"every value must be finite and {'>' if strict else '>='} {low}, got {v!r}")
  return values


def schedule_sizes(train_cfg) -> tuple[int, int]:
  """`(blocks_per_chunk, n_chunks)` from steps / chunk_steps / log_every, validated."""
  steps, chunk_steps, log_every = train_cfg.steps, train_cfg.chunk_steps, train_cfg.log_every
  for name, value in (("steps", steps), ("chunk_steps", chunk_steps), ("log_every", log_every)):
    if value < 1:
      raise ValueError(f"config.train.{name} must be >= 1, got {value}")
  if chunk_steps % log_every:
    raise ValueError(f"config.train.chunk_steps={chunk_steps} must be a multiple of "
                     f"config.train.log_every={log_every}")
  if steps % chunk_steps:
    raise ValueError(f"config.train.steps={steps} must be a multiple of "
                     f"config.train.chunk_steps={chunk_steps}")
  return chunk_steps // log_every, steps // chunk_steps


def validate(config) -> None:
  """Raises ValueError naming the first bad key (`config.section.key: ...`)."""
  _check_choice(config, "router", ROUTERS)
  _check_choice(config, "model.score", SCORES)
  _check_choice(config, "model.positions", POSITIONS)
  _check_choice(config, "execution.mode", EXECUTION_MODES)
  _check_choice(config, "execution.svd_method", metrics.RANK_METHODS)
  _check_choice(config, "metrics.onset_layer_reduce", ONSET_LAYER_REDUCTIONS)
  _check_choice(config, "model.normalise", NORMALISATIONS)
  _check_choice(config, "model.brake_slopes", BRAKE_SLOPES)
  if config.model.score in ("gat", "gatv2") and config.router != "graph":
    _fail("model.score", f'"{config.model.score}" is only defined for router="graph"')
  for name in ("content", "selective", "gate", "token_shift", "bonus"):
    if not isinstance(config.model[name], bool):
      _fail(f"model.{name}", f"must be True or False, got {config.model[name]!r}")
  for name in ("conv_width", "dt_rank"):
    value = config.model[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
      _fail(f"model.{name}", f"must be an integer >= 0, got {value!r}")
  _check_positive_ints(config.model, "model", ("width", "depth", "n_heads", "mlp_ratio",
                                               "state_size", "expand", "max_hops"))
  if config.model.width % config.model.n_heads:
    _fail("model.width", f"{config.model.width} is not divisible by model.n_heads="
          f"{config.model.n_heads}")
  schedule_sizes(config.train)
  _check_positive_ints(config.execution, "execution", ("chunk",))
  budget = config.execution.memory_budget_gib
  if (not isinstance(budget, (int, float, np.integer, np.floating)) or isinstance(budget, bool)
      or not math.isfinite(budget) or budget < 0):
    _fail("execution.memory_budget_gib", f"must be a finite number >= 0 (0: the device's limit), "
          f"got {budget!r}")
  _check_positive_ints(config.checkpoint, "checkpoint", ("max_to_keep",))
  if not isinstance(config.output.tensorboard, bool):
    _fail("output.tensorboard", f"must be True or False, got {config.output.tensorboard!r}")
  if config.checkpoint.max_to_keep < 2:
    _fail("checkpoint.max_to_keep", f"must be >= 2 (the previous checkpoint is the fallback for a "
          f"damaged latest one), got {config.checkpoint.max_to_keep}")
  nats = config.train.divergence_nats
  if isinstance(nats, bool) or not isinstance(nats, (int, float)) or math.isnan(nats) or nats <= 0:
    _fail("train.divergence_nats", f"must be a number > 0 (inf: off), got {nats!r}")
  if config.router == "graph":
    _check_choice(config, "task.name", GRAPH_TASKS)
  else:
    _check_choice(config, "task.name", tasks.SEQUENCE_TASKS + ("text_file",))
    _check_positive_ints(config.task, "task", ("seq_len", "batch_size", "probe_batch_size"))
    if config.task.name == "text_file" and not os.path.isfile(config.task.path):
      _fail("task.path", f'task.name="text_file" needs an existing local text file, got '
            f'{config.task.path!r}')
  _check_numbers("sweep.brakes", config.sweep.brakes, 0.0)
  _check_numbers("sweep.learning_rates", config.sweep.learning_rates, 0.0, strict=True)
  seeds = config.sweep.seeds
  if not seeds or any(not isinstance(s, (int, np.integer)) or s < 0 for s in seeds):
    _fail("sweep.seeds", f"must be a non-empty sequence of integers >= 0, got {seeds!r}")
  if config.metrics.onset_metric not in METRIC_NAMES:
    _fail("metrics.onset_metric", f"{config.metrics.onset_metric!r} is not one of {METRIC_NAMES}")
  for name in ("onset_threshold", "onset_rise"):
    value = config.metrics[name]
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value) or (name == "onset_rise" and value < 0)):
      _fail(f"metrics.{name}", f"must be a finite number{' >= 0' if name == 'onset_rise' else ''}, "
            f"got {value!r}")


METRIC_NAMES = ("sink_mass", "sink_mass_weighted", "sink_excess", "sink_excess_prior", "sink_rate",
                "top_source_weight", "top_source_excess_prior", "routing_entropy",
                "above_uniform_mass_count", "shared_sources", "hub_excess", "key_norm_cv",
                "key_norm_log_spread", "norm_mass_correlation", "effective_rank",
                "rank_collapse_residual", "massive_activation_ratio", "effective_rank_routed",
                "rank_collapse_residual_routed")


def run_grid(config) -> list[dict]:
  """The sweep's runs, seeds x learning rates x brakes (brake fastest), as dicts."""
  grid = itertools.product(config.sweep.seeds, config.sweep.learning_rates, config.sweep.brakes)
  return [dict(run=i, seed=int(seed), brake=float(brake), learning_rate=float(lr))
          for i, (seed, lr, brake) in enumerate(grid)]

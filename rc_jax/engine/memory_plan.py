"""Memory-aware execution (`execution.mode="auto"`): how many runs share one vmapped group.

XLA reports, for a compiled program and per device, the bytes of its arguments, outputs (donated
arguments alias outputs) and temporaries. The program's peak is

    peak = argument + output - alias + temp.

For a sweep chunk with `R` runs per device executed in vmapped groups of `g` runs, the argument and
output bytes grow with `R` (every run's state) and the temporaries with `g`:

    peak(R, g) ~= fixed + R * state_per_run + g * temp_per_run      (g = R: vmap)
    peak(R, g) ~= fixed + 2 R * state_per_run + g * temp_per_run    (g < R: `lax.map` over
                                                                      groups stacks the new states
                                                                      once more)

`choose` (what the sweep does in "auto" mode) compiles the chunk program with all `R` runs vmapped;
if its peak fits the budget that program is used as it is (`vmap`, no extra compilation). Otherwise
it compiles the chunk for 1 and 2 vmapped runs, fits the line above, and compiles `map` with the
largest balanced group that fits (`g = ceil(R / n)` for the fewest `n` groups), shrinking the group
until XLA's peak agrees. A single run that does not fit is refused with a `MemoryBudgetError` (a
ValueError) before anything is written. `plan_config` reports the plan for a config without running
it (from groups of 1 and 2 only).

On CPU a second limit applies: a vmapped group whose temporaries exceed `CPU_GROUP_BYTES` is split
into balanced groups below it (`map`; the init program stays vmapped). A CPU has a few cores, not
thousands of lanes: past the cache, a bigger group adds cache misses, not parallelism (measured on
2 cores: a 16-run width-64 step is 12-25% slower vmapped than in groups of 2-4 runs, 304 vs 76 MiB
of temporaries; width 32 runs as fast vmapped (77 MiB) as in groups).

The budget: `execution.memory_budget_gib` when > 0 (capped by the device's limit), else the device's
`memory_stats()["bytes_limit"]` (accelerators), else `DEFAULT_CPU_BUDGET_GIB`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax

from rc_jax.engine import config_lib
from rc_jax.engine import programs as programs_lib

GIB = 2**30
DEFAULT_CPU_BUDGET_GIB = 8.0
CPU_GROUP_BYTES = 96 * 2**20


def _size(n_bytes: float) -> str:
  return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB / 4 else f"{n_bytes / 2**20:.1f} MiB"


def balanced_group(runs: int, most: int) -> int:
  """The smallest group giving as few groups as groups of `most` would (`ceil(runs / n)`)."""
  most = max(1, min(runs, most))
  return math.ceil(runs / math.ceil(runs / most))


class MemoryBudgetError(ValueError):
  """Not even one run at a time fits the device's memory budget."""


class Footprint(NamedTuple):
  """Per-device bytes of one compiled program (from `Compiled.memory_analysis()`)."""

  argument: int
  output: int
  alias: int
  temp: int

  @property
  def peak(self) -> int:
    return self.argument + self.output - self.alias + self.temp

  @classmethod
  def of(cls, compiled) -> Footprint:
    stats = compiled.memory_analysis()
    if stats is None:
      raise ValueError("execution.mode='auto': this backend reports no memory_analysis(); choose "
                       "execution.mode='vmap' or 'map' explicitly")
    return cls(int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
               int(stats.alias_size_in_bytes), int(stats.temp_size_in_bytes))


class PerRun(NamedTuple):
  """The lines `peak(R, g)` of the module docstring, fitted to vmapped groups of 1 and 2."""

  fixed: float
  state: float   # argument + output - alias bytes per run (scales with the runs on the device)
  temp: float    # temporary bytes per vmapped run (scales with the group)

  @classmethod
  def fit(cls, one: Footprint, two: Footprint) -> PerRun:
    state = max(0, (two.peak - two.temp) - (one.peak - one.temp))
    temp = max(0, two.temp - one.temp)
    return cls(fixed=max(0, one.peak - state - temp), state=state, temp=temp)

  def peak(self, runs: int, group: int) -> float:
    """Predicted peak with `runs` per device in groups of `group`; with groups (`lax.map`) the new
    states are stacked in a temporary before the output, a second copy of every run's state."""
    copies = 1 if group >= runs else 2
    return self.fixed + copies * runs * self.state + group * self.temp

  def largest_group(self, runs: int, budget: float) -> int:
    """Largest balanced group (`ceil(runs / n)`, fewest groups n) whose predicted peak fits; 0 if
    not even a group of one fits."""
    if self.peak(runs, runs) <= budget:
      return runs
    room = budget - self.fixed - 2 * runs * self.state
    if room < self.temp:
      return 0
    return balanced_group(runs, runs if self.temp <= 0 else int(room // self.temp))


class MemoryPlan(NamedTuple):
  mode: str                # "vmap" or "map"
  group: int               # runs per vmapped group on each device (= runs_per_device for vmap)
  runs_per_device: int
  budget: int              # bytes
  budget_source: str
  peak: float              # bytes: XLA's peak of the chosen program (predicted when not compiled)
  vmap_peak: float         # bytes: XLA's (or the predicted) peak with all runs vmapped
  per_run: PerRun | None   # the fitted line, when it was needed
  program: Any = None      # what `build(mode, group)` returned for the chosen plan, if compiled
  reason: str = ""         # why not all runs vmapped

  def describe(self) -> str:
    text = (f"{self.runs_per_device} runs per device, budget {_size(self.budget)} "
            f"({self.budget_source}); all runs vmapped: peak {_size(self.vmap_peak)}")
    if self.per_run is not None:
      text += (f"; per run {_size(self.per_run.temp)} temporaries + {_size(self.per_run.state)} "
               f"state, fixed {_size(self.per_run.fixed)}")
    groups = math.ceil(self.runs_per_device / self.group)
    because = f" ({self.reason})" if self.reason else ""
    return (f"{text} -> execution '{self.mode}'{because}, groups of {self.group} ({groups} per "
            f"device), peak {_size(self.peak)}")


def budget_bytes(devices: Sequence[jax.Device], budget_gib: float) -> tuple[int, str]:
  """The per-device memory budget and where it came from (see module docstring)."""
  limits = []
  for device in devices:
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except  (backends without memory stats raise)
      stats = None
    if stats and stats.get("bytes_limit"):
      limits.append(int(stats["bytes_limit"]))
  device_limit = min(limits) if limits else None
  if budget_gib and budget_gib > 0:
    budget = int(budget_gib * GIB)
    if device_limit is not None and device_limit < budget:
      return device_limit, f"device bytes_limit, below execution.memory_budget_gib={budget_gib:g}"
    return budget, f"execution.memory_budget_gib={budget_gib:g}"
  if device_limit is not None:
    return device_limit, "device bytes_limit"
  return int(DEFAULT_CPU_BUDGET_GIB * GIB), (f"default {DEFAULT_CPU_BUDGET_GIB:g} GiB without "
                                              f"device memory stats; set execution.memory_budget_gib")


# build(mode, group) -> program; compile(program, runs_per_device) -> XLA Compiled of its chunk
Build = Callable[[str, int], Any]
Compile = Callable[[Any, int], Any]


def estimate(build: Build, compile_chunk: Compile) -> PerRun:
  """Fits `PerRun` from the chunk compiled for 1 and 2 vmapped runs per device."""
  one = Footprint.of(compile_chunk(build("vmap", 1), 1))
  two = Footprint.of(compile_chunk(build("vmap", 2), 2))
  return PerRun.fit(one, two)


def _too_big(runs: int, per_run: PerRun, budget: int, budget_source: str) -> MemoryBudgetError:
  return MemoryBudgetError(
      f"execution.mode='auto': one run does not fit in the memory budget of {_size(budget)} "
      f"({budget_source}): with {runs} runs per device the chunk needs "
      f"{_size(per_run.peak(runs, 1))} even one run at a time (fixed {_size(per_run.fixed)} + "
      f"{runs} x {_size(per_run.state)} state + {_size(per_run.temp)} temporaries per run); shrink "
      f"the model, task.batch_size or the grid, use more devices, or raise "
      f"execution.memory_budget_gib")


def choose(build: Build, compile_chunk: Compile, runs_per_device: int, budget: int,
           budget_source: str = "", *, cache_bytes: int | None = None) -> MemoryPlan:
  """Picks `vmap` or `map` with the largest fitting group (see module docstring); logs the choice.

  Args:
    build: `build(mode, group)` returns a sweep program executing the runs that way.
    compile_chunk: `compile_chunk(program, runs_per_device)` lowers and compiles its chunk function
      for abstract inputs of that many runs per device (compiling the real call's program, so the
      later call reuses it) and returns the XLA `Compiled`.
    runs_per_device: R.
    budget: bytes per device.
    budget_source: for messages.
    cache_bytes: if given (CPU: `CPU_GROUP_BYTES`), the most temporary bytes of one vmapped group.

  Returns:
    The plan, with `program` the compiled choice.

  Raises:
    MemoryBudgetError: not even one run at a time fits.
  """
  runs = runs_per_device
  full = build("vmap", runs)
  full_fp = Footprint.of(compile_chunk(full, runs))
  plan = MemoryPlan("vmap", runs, runs, budget, budget_source, full_fp.peak, full_fp.peak, None, full)
  if full_fp.peak <= budget:
    if cache_bytes is not None and full_fp.temp > cache_bytes and runs > 1:
      group = balanced_group(runs, int(cache_bytes // (full_fp.temp / runs)))
      program = build("map", group)
      peak = Footprint.of(compile_chunk(program, runs)).peak
      plan = plan._replace(mode="map", group=group, peak=peak,
                           program=program._replace(init=full.init),
                           reason=f"CPU: groups of at most {_size(cache_bytes)} of temporaries, "
                                  f"{_size(full_fp.temp)} with all runs")
  else:
    per_run = estimate(build, compile_chunk)
    group = per_run.largest_group(runs, budget) if runs > 1 else 0
    while True:
      if group < 1:
        raise _too_big(runs, per_run, budget, budget_source)
      program = build("map", group)
      peak = Footprint.of(compile_chunk(program, runs)).peak
      if peak <= budget:
        break
      smaller = PerRun(per_run.fixed, per_run.state,
                       per_run.temp * peak / per_run.peak(runs, group)).largest_group(runs, budget)
      group = min(smaller, group - 1)  # XLA's peak is above the line: fit again through it
    plan = plan._replace(mode="map", group=group, peak=peak, per_run=per_run, program=program,
                         reason="all runs vmapped exceed the budget")
  return plan


def plan_config(config, devices=None, *, n_runs: int | None = None,
                cache_bytes: int | None = None) -> MemoryPlan:
  """The plan `auto` would choose for `config`, predicted from groups of 1 and 2 (two compilations,
  nothing run or written). `n_runs` overrides the grid's run count (e.g. 128); `cache_bytes` applies
  the CPU group limit (default: none, the plan of an accelerator with this budget)."""
  config_lib.validate(config)
  devices = tuple(jax.devices() if devices is None else devices)
  n_runs = len(config_lib.run_grid(config)) if n_runs is None else n_runs
  runs = -(-n_runs // len(devices))
  budget, source = budget_bytes(devices, config.execution.memory_budget_gib)
  programs = programs_lib.builders_for(programs_lib.trainer_for(config), devices)  # run_sweep's
  per_run = estimate(programs.build, programs.compile_chunk)
  vmap_peak = per_run.peak(runs, runs)
  plan = MemoryPlan("vmap", runs, runs, budget, source, vmap_peak, vmap_peak, per_run)
  if vmap_peak > budget:
    group = per_run.largest_group(runs, budget) if runs > 1 else 0
    if group < 1:
      raise _too_big(runs, per_run, budget, source)
    plan = plan._replace(mode="map", group=group, peak=per_run.peak(runs, group),
                         reason="all runs vmapped exceed the budget")
  if cache_bytes is not None and plan.group * per_run.temp > cache_bytes and plan.group > 1:
    group = min(plan.group, balanced_group(runs, int(cache_bytes // max(per_run.temp, 1))))
    plan = plan._replace(mode="map", group=group, peak=per_run.peak(runs, group),
                         reason=f"CPU: groups of at most {_size(cache_bytes)} of temporaries")
  return plan

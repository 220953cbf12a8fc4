"""Workdirs that grow: a larger grid keeps the finished runs and trains only the new ones.

A sweep's workdir records its grid history in `grid.json`:

    {"fingerprint": <hash of the config without the grid>, "grids": [G_0, G_1, ...]}

where each `G_k = {"seeds": [...], "learning_rates": [...], "brakes": [...]}` is the whole grid
after the k-th (re)run; `G_k` contains `G_{k-1}` axis by axis. The runs of `G_0` live in the workdir
itself (`checkpoints/`), the new runs of `G_k` in sub-sweeps `extensions/<k>-<j>/`, one per block of
the decomposition of `G_k \\ G_{k-1}` into grids (with old axes S, L, B and new S', L', B'):

    (S' - S) x L' x B'    new seeds, every learning rate and brake
    S x (L' - L) x B'     old seeds, new learning rates, every brake
    S x L x (B' - B)      old seeds and learning rates, new brakes

Each part is an ordinary sweep (its own checkpoints, resumption and fingerprint), trained without
outputs; `merge` reorders their logs and states into the run order of the whole grid, so the
outputs cover the whole grid. A run's numbers do not depend on the runs it is batched with (to the
tolerance the execution modes agree to), so a grown workdir equals a fresh sweep of its grid.

Rerunning with any other change (anything outside `config.sweep.seeds / learning_rates / brakes`
that changes the numbers, or a grid that drops a value) raises `WorkdirError`; `execution`,
`checkpoint` and `output` may change freely. Each part keeps its own checkpoint fallback, digests
and device-count check (`rc_jax.engine.checkpoints`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from rc_jax.engine import config_lib
from rc_jax.outputs import tables
from rc_jax.engine.checkpoints import WorkdirError

GRID_AXES = ("seeds", "learning_rates", "brakes")
RECORD = "grid.json"


class Part(NamedTuple):
  config: ml_collections.ConfigDict  # the sweep config with this part's grid
  workdir: str                       # its checkpoints live in workdir/checkpoints
  label: str                         # "" for the first part, else "extensions/<k>-<j>"


def grid_of(config) -> dict[str, list]:
  return {axis: [v.item() if isinstance(v, np.generic) else v for v in config.sweep[axis]]
          for axis in GRID_AXES}


def with_grid(config, grid: Mapping[str, Sequence]) -> ml_collections.ConfigDict:
  """A copy of `config` whose sweep grid is `grid`."""
  config = ml_collections.ConfigDict(config.to_dict())
  for axis in GRID_AXES:
    config.sweep[axis] = tuple(grid[axis])
  return config


def new_blocks(old: Mapping[str, Sequence], new: Mapping[str, Sequence]) -> list[dict[str, list]]:
  """Disjoint grids covering `new` minus `old` (`new` contains `old` axis by axis)."""
  s, l = list(old["seeds"]), list(old["learning_rates"])
  fresh = {axis: [v for v in new[axis] if v not in set(old[axis])] for axis in GRID_AXES}
  blocks = [dict(seeds=fresh["seeds"], learning_rates=list(new["learning_rates"]),
                 brakes=list(new["brakes"])),
            dict(seeds=s, learning_rates=fresh["learning_rates"], brakes=list(new["brakes"])),
            dict(seeds=s, learning_rates=l, brakes=fresh["brakes"])]
  return [block for block in blocks if all(block[axis] for axis in GRID_AXES)]


def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def _parts(config, workdir: str, grids: Sequence[Mapping[str, Sequence]]) -> list[Part]:
  parts = [Part(with_grid(config, grids[0]), workdir, "")]
  for k in range(1, len(grids)):
    for j, block in enumerate(new_blocks(grids[k - 1], grids[k])):
      label = f"extensions/{k}-{j}"
      parts.append(Part(with_grid(config, block), os.path.join(workdir, *label.split("/")), label))
  return parts


def _missing(old: Mapping[str, Sequence], new: Mapping[str, Sequence]) -> str | None:
  """A description of the first value of `old` that `new` lacks, None if `new` contains `old`."""
  for axis in GRID_AXES:
    lost = [v for v in old[axis] if v not in set(new[axis])]
    if lost:
      return f"config.sweep.{axis} lacks {', '.join(map(repr, lost))}"
  return None


def plan(config, workdir: str, free: str, log=None) -> tuple[list[Part], list[dict]]:
  """The parts of `workdir`'s sweep for `config`, and the grid history to `commit` once they open.

  `free` is the fingerprint of `config` without its grid (`sweep.config_fingerprint(config,
  exclude=("sweep",))`). Raises WorkdirError (writing nothing) when `workdir` holds runs of another
  config or a grid that `config`'s does not contain. `log(message, *args)` reports a growth.
  """
  path = os.path.join(workdir, RECORD)
  grid = grid_of(config)
  if not os.path.exists(path):
    return [Part(config, workdir, "")], [grid]  # fresh, or written before grid.json existed
  with open(path) as f:
    record = json.load(f)
  if not any(_has_checkpoint(p.workdir) for p in _parts(config, workdir, record["grids"])):
    return [Part(config, workdir, "")], [grid]  # nothing trained yet: start afresh
  if record["fingerprint"] != free:
    raise WorkdirError(
        f"{workdir} holds a sweep of a different config (fingerprint {record['fingerprint']} != "
        f"{free}, grid aside); only config.sweep.seeds, learning_rates and brakes may change "
        f"(grow) — use a fresh --workdir")
  grids = list(record["grids"])
  missing = _missing(grids[-1], grid)
  if missing:
    raise WorkdirError(f"{workdir} holds a sweep of a different config: a workdir's grid can "
                       f"only grow, but {missing}; use a fresh --workdir")
  if _missing(grid, grids[-1]):  # a larger grid
    grids.append(grid)
    new = [p for p in _parts(config, workdir, grids)
           if p.label.startswith(f"extensions/{len(grids) - 1}-")]
    if log:
      log("growing %s: keeping %d finished runs, training %d new ones in %s", workdir,
          len(config_lib.run_grid(with_grid(config, grids[-2]))),
          sum(len(config_lib.run_grid(p.config)) for p in new), ", ".join(p.label for p in new))
  return _parts(config, workdir, grids), grids


def commit(workdir: str, free: str, grids: Sequence[Mapping[str, Sequence]]) -> None:
  """Writes `workdir/grid.json` (atomically): the grid-free fingerprint and the grid history."""
  os.makedirs(workdir, exist_ok=True)
  with tables.atomic_open(os.path.join(workdir, RECORD)) as f:
    json.dump({"fingerprint": free, "grids": list(grids)}, f, indent=2)


def run_key(run: Mapping[str, Any]) -> tuple:
  return int(run["seed"]), float(run["learning_rate"]), float(run["brake"])


def merge(runs: Sequence[Mapping[str, Any]], part_runs: Sequence[Sequence[Mapping[str, Any]]],
          part_trees: Sequence[Any]):
  """Gathers per-part `[R_p, ...]` trees into one host `[R, ...]` tree in the order of `runs`."""
  offsets = np.cumsum([0] + [len(runs_p) for runs_p in part_runs])
  where = {run_key(run): offsets[p] + i
           for p, runs_p in enumerate(part_runs) for i, run in enumerate(runs_p)}
  index = np.array([where[run_key(run)] for run in runs])
  return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(x) for x in leaves])[index],
                      *part_trees)

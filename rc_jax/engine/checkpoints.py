"""Verified sweep checkpoints: Orbax checkpoints that carry digests of what they hold.

    store = VerifiedCheckpoints(directory, max_to_keep=2)
    restored = store.restore_latest(abstract_state, check_meta)   # None when there is none
    store.save(step, state, logs, meta)
    store.close()

A checkpoint holds the run-batched train state (`[n_devices, runs_per_device, ...]` global arrays),
the host logs so far (`{name: np.ndarray}`) and a JSON meta dict, to which `save` adds

  state_digest  one SHA-256 per device row of the state (row i = everything device i holds, every
                leaf in tree order with its path, dtype and shape): each process hashes only the
                rows on its own devices, so nothing is gathered but the 32-byte digests;
  logs_digest   SHA-256 of the logs (names, dtypes, shapes, bytes);
  meta_digest   SHA-256 of the meta dict itself (without this key).

`restore_latest` tries checkpoints newest first and takes the first whose meta, state and logs
all read back and match their digests (every process must agree). Damaged newer checkpoints are
deleted and named, with the one resumed from, in ONE warning line; when none is intact it raises
`WorkdirError`. Keep `max_to_keep >= 2` so that there is a previous checkpoint to fall back to.
Saving is synchronous, so a write error (a full disk) surfaces as one `CheckpointWriteError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, NamedTuple

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from rc_jax.engine import distributed

_DIGEST_KEYS = ("state_digest", "logs_digest", "meta_digest")


class WorkdirError(ValueError):
  """A workdir that cannot be used or resumed (another config or layout, no intact checkpoint,
  not writable)."""


class CheckpointWriteError(WorkdirError):
  """A checkpoint could not be written (a full disk, lost permissions); earlier ones are intact."""


class Restored(NamedTuple):
  step: int
  state: Any
  logs: dict[str, np.ndarray]
  meta: dict


def _row_hashers(n_rows: int):
  return [hashlib.sha256() for _ in range(n_rows)]


def _leaf_rows(leaf) -> list[tuple[int, np.ndarray]]:
  """`(row, host data of that row)` for the rows of `leaf` (axis 0) on this process's devices."""
  if isinstance(leaf, jax.Array):
    rows, seen = [], set()
    for shard in leaf.addressable_shards:
      start = (shard.index[0].start or 0) if shard.index else 0
      if start in seen:   # a replica of a shard already read
        continue
      seen.add(start)
      data = np.asarray(shard.data)
      rows.extend((start + i, data[i]) for i in range(data.shape[0]))
    return rows
  data = np.asarray(leaf)
  return [(i, data[i]) for i in range(data.shape[0])]


def _local_state_digests(state) -> dict[int, bytes]:
  """`{row: sha256 digest}` for the state rows held by this process (see module docstring)."""
  hashers: dict[int, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    header = f"{jax.tree_util.keystr(path)}|{np.dtype(leaf.dtype).str}|{tuple(leaf.shape)}|"
    for row, data in _leaf_rows(leaf):
      hasher = hashers.setdefault(row, hashlib.sha256())
      hasher.update(header.encode())
      hasher.update(np.ascontiguousarray(data).tobytes())
  return {row: hasher.digest() for row, hasher in hashers.items()}


def state_digests(state) -> list[str]:
  """Hex SHA-256 per device row of a run-batched state, on every process (a collective when
  there are several processes: each contributes the rows of its own devices)."""
  n_rows = jax.tree.leaves(state)[0].shape[0]
  local = _local_state_digests(state)
  table = np.zeros((n_rows, 32), np.uint8)
  for row, digest in local.items():
    table[row] = np.frombuffer(digest, np.uint8)
  # exactly one process holds each row, the others contribute zeros
  table = distributed.gather_host(table).sum(axis=0, dtype=np.uint8)
  return [bytes(row).hex() for row in table]


def logs_digest(logs: dict[str, np.ndarray]) -> str:
  hasher = hashlib.sha256()
  for name in sorted(logs):
    value = np.ascontiguousarray(logs[name])
    hasher.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
    hasher.update(value.tobytes())
  return hasher.hexdigest()


def meta_digest(meta: dict) -> str:
  body = {k: v for k, v in meta.items() if k != "meta_digest"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _first_line(err: BaseException) -> str:
  lines = [line.strip() for line in str(err).splitlines() if line.strip()]
  return f"{type(err).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def _root_cause(err: BaseException) -> BaseException:
  """The innermost OSError in `err`'s chain (a disk error wrapped by Orbax), else `err`."""
  seen, cause = set(), err
  while cause is not None and id(cause) not in seen:
    if isinstance(cause, OSError):
      return cause
    seen.add(id(cause))
    cause = cause.__cause__ or cause.__context__
  return err


class VerifiedCheckpoints:
  """An Orbax `CheckpointManager` with digests and fallback (see module docstring)."""

  def __init__(self, directory: str, *, max_to_keep: int):
    if max_to_keep < 2:
      raise ValueError(f"max_to_keep must be >= 2 (the previous checkpoint is the fallback), "
                       f"got {max_to_keep}")
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           cleanup_tmp_directories=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, logs: dict[str, np.ndarray], meta: dict) -> None:
    """Saves `state`, `logs` and `meta` (+ digests) as checkpoint `step`, synchronously."""
    meta = dict(meta, state_digest=state_digests(state), logs_digest=logs_digest(logs))
    meta["meta_digest"] = meta_digest(meta)
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), logs=ocp.args.StandardSave(logs),
          meta=ocp.args.JsonSave(meta)))
      self._manager.wait_until_finished()
    except Exception as err:  # pylint: disable=broad-except  (Orbax wraps OSErrors variously)
      earlier = [s for s in self.steps() if s < step]
      intact = (f"checkpoints up to {self.path(earlier[-1])} are intact" if earlier else
                "no earlier checkpoint")
      raise CheckpointWriteError(
          f"cannot write checkpoint {self.path(step)} ({_first_line(_root_cause(err))}); "
          f"{intact}: free space or fix permissions and rerun to resume") from err

  def _verify(self, step: int, abstract_state,
              check_meta: Callable[[dict], None]) -> tuple[Restored | None, str]:
    """Reads checkpoint `step`; `(Restored, "")` if intact, else `(None, why not)`.

    `check_meta` may raise `WorkdirError` (a checkpoint of another config): that is not damage
    and propagates.
    """
    distributed.sync("restore")  # Orbax's own barriers are collectives: arrive together
    try:
      meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as err:  # pylint: disable=broad-except  (any damage is reported alike)
      return None, f"unreadable meta: {_first_line(err)}"
    if not isinstance(meta, dict) or any(k not in meta for k in _DIGEST_KEYS):
      return None, "meta without digests"
    if meta_digest(meta) != meta["meta_digest"]:
      return None, "meta digest mismatch"
    check_meta(meta)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), logs=ocp.args.StandardRestore(),
          meta=ocp.args.JsonRestore()))
    except Exception as err:  # pylint: disable=broad-except
      return None, f"unreadable: {_first_line(err)}"
    logs = {name: np.asarray(value) for name, value in restored.logs.items()}
    if logs_digest(logs) != meta["logs_digest"]:
      return None, "logs digest mismatch"
    expected = meta["state_digest"]
    bad_rows = sorted(row for row, digest in _local_state_digests(restored.state).items()
                      if row >= len(expected) or digest.hex() != expected[row])
    if bad_rows:
      return None, f"state digest mismatch (device rows {', '.join(map(str, bad_rows))})"
    return Restored(step, restored.state, logs, meta), ""

  def restore_latest(self, abstract_state, check_meta: Callable[[dict], None]) -> Restored | None:
    """The newest intact checkpoint, restored with `abstract_state`'s shapes and shardings.

    Returns None when there is no checkpoint. Deletes damaged newer ones (one warning line names
    them and the checkpoint resumed from); raises WorkdirError when none is intact.
    """
    damaged: list[tuple[int, str]] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      restored, reason = self._verify(step, abstract_state, check_meta)
      if not distributed.all_true(restored is not None):
        damaged.append((step, reason or "damaged on another process"))
        continue
      if damaged:
        for bad_step, _ in damaged:
          self._manager.delete(bad_step)
        logging.warning("%s; deleted and resuming from %s", _describe(self, damaged),
                        self.path(step))
      return restored
    if damaged:
      raise WorkdirError(f"no intact checkpoint in {self.directory}: {_describe(self, damaged)}; "
                         "delete that directory to start the sweep over, or use a fresh --workdir")
    return None

  def close(self) -> None:
    self._manager.close()


def _describe(store: VerifiedCheckpoints, damaged: list[tuple[int, str]]) -> str:
  return "; ".join(f"checkpoint {store.path(step)} is damaged ({reason})"
                   for step, reason in damaged)

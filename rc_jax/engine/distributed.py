"""Multi-process sweeps on JAX's own runtime (`jax.distributed`).

One sweep can span several processes (hosts of a TPU slice, nodes of a GPU cluster, or processes on
one machine): every process runs the same program, `jax.devices()` lists the devices of all of
them, and the sweep's run axis is sharded over that global device list. Host data enters with
`global_array` (each process supplies only the shards on its own devices) and leaves with `to_host`
(an all-gather when the array spans other processes' devices: `np.asarray` would raise there).

    initialize(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=0)
    initialize(auto=True)   # TPU slice, Slurm, Open MPI: JAX detects all three settings

Settings left unset are read from the environment: `JAX_COORDINATOR_ADDRESS` (JAX's own),
`JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`; what is still unset JAX detects from the cluster.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import jax
import jaxlib
from jax.experimental import multihost_utils
import numpy as np

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def settings(coordinator_address: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict[str, Any]:
  """The given settings, unset ones filled from the environment (None where absent there too).

  Raises ValueError for a bad value (naming the flag or variable).
  """
  out = {"coordinator_address": coordinator_address or os.environ.get(ENV_COORDINATOR) or None,
         "num_processes": num_processes if num_processes is not None else
                          _env_int(ENV_NUM_PROCESSES),
         "process_id": process_id if process_id is not None else _env_int(ENV_PROCESS_ID)}
  if out["num_processes"] is not None and out["num_processes"] < 1:
    raise ValueError(f"num_processes must be >= 1, got {out['num_processes']}")
  if out["process_id"] is not None and out["process_id"] < 0:
    raise ValueError(f"process_id must be >= 0, got {out['process_id']}")
  if None not in (out["num_processes"], out["process_id"]) and \
      out["process_id"] >= out["num_processes"]:
    raise ValueError(f"process_id={out['process_id']} must be < num_processes="
                     f"{out['num_processes']}")
  return out


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False) -> bool:
  """Starts JAX's distributed runtime when asked; call before anything else uses JAX.

  It is asked when `auto` is set or any setting is given (here or in the environment, see the
  module docstring). CPU collectives go through gloo (the CPU backend has none by default).

  Returns:
    Whether the runtime is (now) initialised, i.e. whether this is a multi-process run.
  """
  given = settings(coordinator_address, num_processes, process_id)
  if not auto and all(value is None for value in given.values()):
    return is_initialized()
  if is_initialized():
    return True
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**given)
  return True


def is_initialized() -> bool:
  return jax.distributed.is_initialized()


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def environment() -> dict:
  """Where this process trains: JAX, jaxlib and Python versions, backend, device kind and count."""
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "python": platform.python_version(),
          "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
          "devices": jax.device_count(), "processes": jax.process_count()}


def is_main() -> bool:
  """Whether this process writes the sweep's tables, figures and config (process 0)."""
  return jax.process_index() == 0


def global_array(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global `jax.Array` of `host` (the full array, the same on every process) with `sharding`;
  each process places only the shards of its own devices."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree: Any) -> Any:
  """NumPy copies of every leaf's full value, on every process (all-gathered across processes
  when a leaf spans devices of other processes; every process must call it)."""
  if any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(tree)):
    sync("to_host")
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def gather_host(value: np.ndarray) -> np.ndarray:
  """`[n_processes, ...]`: every process's `value` (same shape on each), in process order."""
  value = np.asarray(value)
  if process_count() == 1:
    return value[None]
  sync("gather_host")
  return np.asarray(multihost_utils.process_allgather(value))


def all_true(flag: bool) -> bool:
  """Whether `flag` holds on every process (a collective: every process must call it)."""
  return bool(np.all(gather_host(np.asarray([bool(flag)]))))


BARRIER_TIMEOUT_S = 3600
_barriers = [0]


def sync(name: str) -> None:
  """A barrier across processes (no-op in one process), waiting up to `BARRIER_TIMEOUT_S`.

  It goes through the coordination service, not through collectives: a gloo collective gives up
  when the processes reach it more than 30 s apart (one still compiling, or a loaded machine),
  so every collective of a sweep is preceded by this barrier.
  """
  if process_count() == 1:
    return
  _barriers[0] += 1
  client = jax._src.distributed.global_state.client  # pylint: disable=protected-access
  client.wait_at_barrier(f"rc_jax/{name}/{_barriers[0]}", BARRIER_TIMEOUT_S * 1000)

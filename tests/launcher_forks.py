"""Runs a launcher script once per argument list, each run in a child process forked after the
launcher's libraries are imported: N invocations (the bad-flag battery, the tiny presets) pay for
one import of JAX, Flax, Orbax, matplotlib and rc_jax instead of N.

    python tests/launcher_forks.py LAUNCHER CASES_JSON OUT_JSON [--parallel]

CASES_JSON: `[[arg, ...], ...]`. OUT_JSON: `[[exit status, stdout, stderr], ...]` in the same order.
Children run one at a time, or all at once with `--parallel`.

Each child is a real process running the script as `__main__` (`runpy`) with its own `sys.argv`:
it defines and parses its flags (ml-collections reads `--config.*` overrides from `sys.argv` while
defining them), runs, and exits with the status a separate `python LAUNCHER ARGS` would (an exit
message goes to stderr with status 1, an uncaught exception prints its traceback with status 1).
The parent imports the libraries but never the script, and starts no JAX backend (forking one is
unsafe).
"""

import json
import os
import runpy
import sys
import tempfile
import traceback

from absl import app, flags, logging  # noqa: F401  (what the launchers import, paid for once)
from matplotlib import figure  # noqa: F401
from ml_collections import config_flags  # noqa: F401
import rc_jax.engine.sweep  # noqa: F401
import rc_jax.outputs.artifacts  # noqa: F401


def _exit_status(stop: SystemExit) -> int:
  """The status `python script.py` exits with after `stop` (a message: printed, status 1)."""
  if stop.code is None:
    return 0
  if isinstance(stop.code, int):
    return stop.code
  print(stop.code, file=sys.stderr)
  return 1


def _child(launcher: str, args: list[str], out_path: str, err_path: str) -> None:
  """In the forked child: stdout/stderr to files, run the script, exit with its status."""
  status = 1
  try:
    for stream, path in ((1, out_path), (2, err_path)):
      fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      os.dup2(fd, stream)
      os.close(fd)
    sys.argv = [launcher, *args]
    try:
      runpy.run_path(launcher, run_name="__main__")
      status = 0
    except SystemExit as stop:
      status = _exit_status(stop)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _wait(pid: int) -> int:
  return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def run_all(launcher: str, cases: list[list[str]], parallel: bool = False
            ) -> list[tuple[int, str, str]]:
  """`(exit status, stdout, stderr)` of `launcher` run with each case's arguments."""
  with tempfile.TemporaryDirectory() as tmp:
    paths = [(os.path.join(tmp, f"{i}.out"), os.path.join(tmp, f"{i}.err"))
             for i in range(len(cases))]
    statuses, running = [None] * len(cases), []
    for i, args in enumerate(cases):
      sys.stdout.flush()
      sys.stderr.flush()
      pid = os.fork()
      if pid == 0:
        _child(launcher, args, *paths[i])
      running.append((i, pid))
      if not parallel:
        statuses[i] = _wait(running.pop()[1])
    for i, pid in running:
      statuses[i] = _wait(pid)
    results = []
    for i, (out_path, err_path) in enumerate(paths):
      with open(out_path) as out, open(err_path) as err:
        results.append((statuses[i], out.read(), err.read()))
  return results


def main() -> None:
  launcher, cases_path, out_path, *options = sys.argv[1:]
  with open(cases_path) as f:
    cases = json.load(f)
  with open(out_path, "w") as f:
    json.dump(run_all(os.path.abspath(launcher), cases, parallel="--parallel" in options), f)


if __name__ == "__main__":
  main()

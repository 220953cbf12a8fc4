"""Progress of a sweep through Python's standard `logging` (logger "rc_jax", INFO level).

What a sweep reports, in order (the tiny attention preset, onset metric sink_excess > 1.5, on a
loaded 2-core CPU machine):

    sweep of 4 runs into /tmp/tiny
    devices: 1 x cpu (process 0 of 1)
    compiling: 4 runs (4 per device x 1 device, execution vmap), 8 steps in 2 chunks of 4
    initialised 4 runs and measured step 0 in 56s (compiling included)
    chunk 1/2 (step 4/8): compiling+first chunk 57s | ETA after the next chunk
      grid point  loss min/med/max  sink_excess(max) min/med/max  >1.5
      brake=0     3/3.04/3.09       1.19/1.23/1.27                0/2
      brake=0.5   3.06/3.12/3.18    0.558/0.584/0.609             0/2
    chunk 2/2 (step 8/8): 0.0s | 399 run-steps/s
      ...
    writing tables and figures
    done: 4 runs in 122.3s; outputs in /tmp/tiny

The ETA averages the steady-state chunks only: the first chunk a process runs includes compiling
the program, so it is reported but not extrapolated. The digest gives, per grid point (brake, and
learning rate when several), the min/median/max over seeds of the loss and of the onset metric
(layer-reduced as `metrics.onset_layer_reduce`) at the chunk's last logged step, and how many seeds
are above the onset threshold there.

Silencing: `run_sweep(..., verbose=False)`, or `logging.getLogger("rc_jax").setLevel(
logging.WARNING)`. When nothing in the logging tree would show the lines (a plain Python session),
`Reporter` attaches one stderr handler to the "rc_jax" logger; it removes it again once the
application configures logging itself (e.g. `logging.basicConfig`, absl, pytest).
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax import outputs

LOGGER = logging.getLogger("rc_jax")
_FORMAT = "%(asctime)s %(message)s"
_DATE_FORMAT = "%H:%M:%S"
MAX_DIGEST_ROWS = 12
_EXECUTED = weakref.WeakSet()  # compiled chunk functions that ran once in this process


class _DefaultHandler(logging.StreamHandler):
  """The stderr handler rc_jax adds when nothing else would show its progress."""


def plain_handler(stream=None) -> logging.Handler:
  """A stream handler (stderr by default) printing `HH:MM:SS message`."""
  handler = logging.StreamHandler(stream or sys.stderr)
  handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
  return handler


def _others_show(logger: logging.Logger) -> bool:
  """Whether a handler other than ours would receive the logger's records."""
  node = logger
  while node:
    if any(not isinstance(h, _DefaultHandler) for h in node.handlers):
      return True
    if not node.propagate:
      return False
    node = node.parent
  return False


def ensure_visible(logger: logging.Logger = LOGGER) -> None:
  """Makes `logger`'s INFO lines visible unless the application decides otherwise.

  Sets the level to INFO only if it is unset (NOTSET), and adds (or removes) the default stderr
  handler depending on whether another handler would show the records.
  """
  if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)
  ours = [h for h in logger.handlers if isinstance(h, _DefaultHandler)]
  if _others_show(logger):
    for handler in ours:
      logger.removeHandler(handler)
  elif not ours:
    handler = _DefaultHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, _DATE_FORMAT))
    logger.addHandler(handler)


def _seconds(value: float) -> str:
  if value < 90:
    return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"
  if value < 5400:
    return f"{value / 60:.1f}min"
  return f"{value / 3600:.1f}h"


def _number(value: float) -> str:
  """3 significant digits, `nan` / `inf` as such."""
  return f"{value:.3g}" if np.isfinite(value) else str(value)


def _three(values: np.ndarray) -> str:
  """`min/median/max` of the finite values, with the count of non-finite ones."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  text = ("/".join(_number(v) for v in (finite.min(), np.median(finite), finite.max()))
          if finite.size else "-")
  bad = values.size - finite.size
  return f"{text} ({bad} non-finite)" if bad else text


def _point_label(run: Mapping[str, Any], show_lr: bool) -> str:
  label = f"brake={run['brake']:g}"
  return f"lr={run['learning_rate']:g} {label}" if show_lr else label


def digest(runs: Sequence[Mapping[str, Any]], logs: Mapping[str, np.ndarray],
           onset: Mapping[str, Any], max_rows: int = MAX_DIGEST_ROWS) -> list[str]:
  """Lines of the per-grid-point digest of `logs` (`[R, K(, L)]`) at their last logged step.

  Grid points are (learning rate, brake) pairs in order of first appearance; at most `max_rows` of
  them, evenly spaced, are shown (the header then says how many).
  """
  points: dict[tuple, list[int]] = {}
  for index, run in enumerate(runs):
    points.setdefault((run["learning_rate"], run["brake"]), []).append(index)
  show_lr = len({lr for lr, _ in points}) > 1
  keys = list(points)
  if len(keys) > max_rows:
    keys = [keys[i] for i in np.unique(np.linspace(0, len(keys) - 1, max_rows).round().astype(int))]
  loss = np.asarray(logs["loss"])[:, -1]
  metric = outputs.reduce_layers(np.asarray(logs[onset["metric"]])[:, -1],
                                onset["layer_reduce"])
  threshold = float(onset["threshold"])
  name = f"{onset['metric']}({onset['layer_reduce']})"
  rows = [(_point_label(runs[points[k][0]], show_lr), _three(loss[points[k]]),
           _three(metric[points[k]]),
           f"{int(np.sum(metric[points[k]] > threshold))}/{len(points[k])}") for k in keys]
  shown = f" ({len(keys)} of {len(points)} grid points)" if len(keys) < len(points) else ""
  header = ("grid point" + shown, "loss min/med/max", f"{name} min/med/max", f">{threshold:g}")
  widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
  return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
          for row in [header] + rows]


class Reporter:
  """Progress lines of one sweep (or one part of a grown sweep); silent when `verbose=False`."""

  def __init__(self, verbose: bool = True):
    self.verbose = verbose
    if verbose:
      ensure_visible()
    self._steady: list[float] = []   # seconds per steady-state chunk

  def info(self, message: str, *args) -> None:
    if self.verbose:
      LOGGER.info(message, *args)

  def devices(self, devices: Sequence[Any], process_index: int = 0, process_count: int = 1) -> None:
    kinds: dict[str, int] = {}
    for device in devices:
      kind = getattr(device, "device_kind", device.platform)
      label = device.platform if kind.lower() == device.platform else f"{device.platform} ({kind})"
      kinds[label] = kinds.get(label, 0) + 1
    text = ", ".join(f"{n} x {label}" for label, n in kinds.items())
    self.info("devices: %s (process %d of %d)", text, process_index, process_count)

  def compiling(self, chunk_fn, *, n_runs: int, n_devices: int, per_device: int, steps: int,
                chunk_steps: int, execution: str) -> None:
    """Announces the program's size before its first call, or that it is already compiled;
    `execution` is how runs execute on a device ("vmap", "map(chunk=4)", "sequential")."""
    size = (f"{n_runs} runs ({per_device} per device x {n_devices} device"
            f"{'s' if n_devices > 1 else ''}, execution {execution}), {steps} steps in "
            f"{steps // chunk_steps} chunks of {chunk_steps}")
    if chunk_fn in _EXECUTED:
      self.info("reusing the compiled program: %s", size)
    else:
      self.info("compiling: %s", size)

  def initialised(self, n_runs: int, elapsed: float) -> None:
    self.info("initialised %d runs and measured step 0 in %s (compiling included)", n_runs,
              _seconds(elapsed))

  def chunk(self, chunk_fn, *, index: int, n_chunks: int, chunk_steps: int, elapsed: float,
            n_runs: int, runs=None, logs=None, onset=None) -> None:
    """One line per finished chunk `index` (0-based) and, given `logs`, the digest."""
    step = (f"chunk {index + 1}/{n_chunks} "
            f"(step {(index + 1) * chunk_steps}/{n_chunks * chunk_steps})")
    if chunk_fn not in _EXECUTED:
      _EXECUTED.add(chunk_fn)
      line = f"{step}: compiling+first chunk {_seconds(elapsed)}"
      if index + 1 < n_chunks:
        line += " | ETA after the next chunk"
    else:
      self._steady.append(elapsed)
      per_chunk = max(float(np.mean(self._steady)), 1e-9)
      rate = n_runs * chunk_steps / per_chunk
      line = f"{step}: {_seconds(elapsed)} | {rate:.3g} run-steps/s"
      if index + 1 < n_chunks:
        line += f" | ETA {_seconds((n_chunks - index - 1) * per_chunk)}"
    self.info("%s", line)
    if self.verbose and logs is not None and LOGGER.isEnabledFor(logging.INFO):
      for row in digest(runs, logs, onset):
        self.info("%s", row)

"""Progress of a sweep through Python's standard `logging` (logger "rc_jax", INFO level).

What a sweep reports, in order (the tiny attention preset, onset metric sink_excess > 1.5, on a
loaded 2-core CPU machine):

    sweep of 4 runs into /tmp/tiny
    devices: 1 x cpu (process 0 of 1)
    compiling: 4 runs (4 per device x 1 device, execution auto), 8 steps in 2 chunks of 4
    execution auto: 4 runs per device, budget 8.00 GiB (...); all runs vmapped: peak 1.2 MiB -> ...
    compiled in 16s (execution vmap)
    initialised 4 runs and measured step 0 in 0.1s
    chunk 1/2 (step 4/8): 0.1s | 320 run-steps/s | ETA 0.1s
      grid point  loss min/med/max  shared_sources(max) min/med/max  >0.25
      brake=0     3/3.04/3.09       0.5/0.5/0.5                      2/2
      brake=0.5   3.06/3.12/3.18    0.5/0.625/0.75                   2/2
    chunk 2/2 (step 8/8): 0.0s | 1.41e+03 run-steps/s
      ...
    writing tables and figures
    done: 4 runs in 18.7s; outputs in /tmp/tiny

Compilation (of the init and chunk programs, ahead of their first call) is announced before it
starts and timed on its own, so chunk times are training only; rate and ETA leave out the first
chunk once later ones exist. The digest gives, per grid point (brake, and
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax.measurement.stats import reduce_layers

LOGGER = logging.getLogger("rc_jax")
_FORMAT = "%(asctime)s %(message)s"
_DATE_FORMAT = "%H:%M:%S"
MAX_DIGEST_ROWS = 12


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
  metric = reduce_layers(np.asarray(logs[onset["metric"]])[:, -1], onset["layer_reduce"])
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
    self._times: list[float] = []   # seconds per chunk

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

  def compiling(self, *, cached: bool, n_runs: int, n_devices: int, per_device: int, steps: int,
                chunk_steps: int, execution: str) -> None:
    """Announces the program's size before compiling it, or that this process compiled it already;
    `execution` is the mode asked for ("auto", "vmap", "map(chunk=4)", "sequential")."""
    size = (f"{n_runs} runs ({per_device} per device x {n_devices} device"
            f"{'s' if n_devices > 1 else ''}, execution {execution}), {steps} steps in "
            f"{steps // chunk_steps} chunks of {chunk_steps}")
    self.info("%s: %s", "reusing the compiled program" if cached else "compiling", size)

  def compiled(self, elapsed: float, execution: str, plan: str = "") -> None:
    """After compiling: the time it took, how runs execute and, for "auto", the memory plan."""
    if plan:
      self.info("execution auto: %s", plan)
    self.info("compiled in %s (execution %s)", _seconds(elapsed), execution)

  def initialised(self, n_runs: int, elapsed: float) -> None:
    self.info("initialised %d runs and measured step 0 in %s", n_runs, _seconds(elapsed))

  def chunk(self, *, index: int, n_chunks: int, chunk_steps: int, elapsed: float, n_runs: int,
            runs=None, logs=None, onset=None) -> None:
    """One line per finished chunk `index` (0-based) and, given `logs`, the digest. Rate and ETA
    use the chunks after the first one this reporter saw (its first call can carry one-off costs),
    the first one alone until there are more."""
    step = (f"chunk {index + 1}/{n_chunks} "
            f"(step {(index + 1) * chunk_steps}/{n_chunks * chunk_steps})")
    self._times.append(elapsed)
    per_chunk = max(float(np.mean(self._times[1:] or self._times)), 1e-9)
    rate = n_runs * chunk_steps / per_chunk
    line = f"{step}: {_seconds(elapsed)} | {rate:.3g} run-steps/s"
    if index + 1 < n_chunks:
      line += f" | ETA {_seconds((n_chunks - index - 1) * per_chunk)}"
    self.info("%s", line)
    if self.verbose and logs is not None and LOGGER.isEnabledFor(logging.INFO):
      for row in digest(runs, logs, onset):
        self.info("%s", row)

"""Live TensorBoard curves of a sweep: one event file per run, appended chunk by chunk.

With `config.output.tensorboard = True` a sweep writes, under `<workdir>/tensorboard/`, one
directory per run named `seed=S/lr=L/brake=B` (numbers in shortest positional form, e.g.
`seed=0/lr=0.003/brake=0`), holding event files with a scalar per logged step for

  loss, probe_loss, probe_accuracy     every per-step scalar of the logs
  <metric>/layer_<l>                   every per-layer collapse metric, layer by layer
  <metric>/<max|mean>                  the onset metric reduced over layers as configured

(`tensorboard --logdir <workdir>/tensorboard`). Each event file starts with a session-start marker
at the first step it writes, so TensorBoard drops the points a resumed sweep writes again.

The writer is tensorboardX's synchronous `EventsWriter` (the `tensorboard` extra: no TensorFlow).
`read_scalars` reads the files back (no TensorBoard needed).
"""

from __future__ import annotations

import glob
import os
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rc_jax.measurement import stats

INSTALL_HINT = 'pip install -c constraints.txt -e ".[tensorboard]"'


def _positional(value: float) -> str:
  return np.format_float_positional(float(value), trim="-")


def run_name(run: Mapping[str, Any]) -> str:
  """`seed=S/lr=L/brake=B` for a run dict of the sweep grid."""
  return (f"seed={int(run['seed'])}/lr={_positional(run['learning_rate'])}/"
          f"brake={_positional(run['brake'])}")


def scalar_series(logs: Mapping[str, Any], onset: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """`{tag: float64 [R, K]}` for every logged scalar, metric layer and the reduced onset metric."""
  series = {}
  for name, value in logs.items():
    value = np.asarray(value, np.float64)
    if name == "step":
      continue
    if value.ndim == 2:
      series[name] = value
    else:
      series.update((f"{name}/layer_{layer}", value[..., layer]) for layer in range(value.shape[2]))
  reduce = onset["layer_reduce"]
  if reduce in stats.ONSET_LAYER_REDUCTIONS:
    series[f"{onset['metric']}/{reduce}"] = stats.reduce_layers(logs[onset["metric"]], reduce)
  return series


def _import_tensorboardx():
  try:
    from tensorboardX import event_file_writer  # pylint: disable=import-outside-toplevel
    from tensorboardX.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ValueError(f"config.output.tensorboard=True needs tensorboardX ({INSTALL_HINT})") from err
  return event_file_writer, event_pb2, summary_pb2


def check_available() -> None:
  """ValueError naming config.output.tensorboard unless tensorboardX imports."""
  _import_tensorboardx()


class SweepWriter:
  """Event files for the runs of one sweep; `write` appends a chunk of logs and flushes.

  Args:
    logdir: the directory holding one sub-directory per run.
    runs: the sweep's run dicts (seed, learning_rate, brake), in the order of the logs' run axis.
    first_step: the first step this writer will write; TensorBoard discards points of earlier
      files at this step or later (they belong to an interrupted attempt).
  """

  def __init__(self, logdir: str, runs: Sequence[Mapping[str, Any]], first_step: int):
    event_file_writer, self._event_pb2, self._summary_pb2 = _import_tensorboardx()
    self._writers = []
    suffix = f".{time.time_ns()}.{os.getpid()}"
    for run in runs:
      directory = os.path.join(logdir, *run_name(run).split("/"))
      os.makedirs(directory, exist_ok=True)
      writer = event_file_writer.EventsWriter(os.path.join(directory, "events"), suffix)
      writer.write_event(self._event_pb2.Event(
          wall_time=time.time(), step=int(first_step),
          session_log=self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)))
      self._writers.append(writer)

  def write(self, logs: Mapping[str, Any], onset: Mapping[str, Any]) -> None:
    """Appends `logs` (`step [R, K]`, scalars `[R, K]`, metrics `[R, K, L]`) and flushes."""
    steps = np.asarray(logs["step"])
    series = scalar_series(logs, onset)
    now = time.time()
    value_cls = self._summary_pb2.Summary.Value
    for r, writer in enumerate(self._writers):
      for k in range(steps.shape[1]):
        summary = self._summary_pb2.Summary(value=[
            value_cls(tag=tag, simple_value=float(value[r, k])) for tag, value in series.items()])
        writer.write_event(self._event_pb2.Event(wall_time=now, step=int(steps[r, k]),
                                                 summary=summary))
      writer.flush()

  def close(self) -> None:
    for writer in self._writers:
      writer.close()
    self._writers = []


def _records(path: str) -> list[bytes]:
  """The payloads of a TFRecord file, CRCs checked."""
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=import-outside-toplevel
  payloads = []
  with open(path, "rb") as f:
    data = f.read()
  offset = 0
  while offset < len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
    payload = data[offset + 12:offset + 12 + length]
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
    if header_crc != masked_crc32c(header) or payload_crc != masked_crc32c(payload):
      raise ValueError(f"{path}: corrupt record at byte {offset}")
    payloads.append(payload)
    offset += 16 + length
  return payloads


def read_scalars(logdir: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """`{run_name: {tag: (steps, values)}}` from the event files under `logdir`.

  Files are read in name order (creation time); a session-start event at step s discards the
  points read so far at steps >= s, as TensorBoard does.
  """
  _, event_pb2, _ = _import_tensorboardx()
  runs: dict[str, dict[str, dict[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "**", "*tfevents*"), recursive=True)):
    name = os.path.relpath(os.path.dirname(path), logdir).replace(os.sep, "/")
    tags = runs.setdefault(name, {})
    for payload in _records(path):
      event = event_pb2.Event.FromString(payload)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        for points in tags.values():
          for step in [s for s in points if s >= event.step]:
            del points[step]
      for value in event.summary.value:
        tags.setdefault(value.tag, {})[event.step] = value.simple_value
  return {name: {tag: (np.array(sorted(points), np.int64),
                       np.array([points[s] for s in sorted(points)], np.float64))
                 for tag, points in tags.items()}
          for name, tags in runs.items()}

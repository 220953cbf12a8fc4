"""rc_jax.outputs.compare and experiments/compare.py on two tiny synthetic sweep workdirs (no training)."""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from rc_jax.outputs import compare, tables

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
_LAUNCHER = os.path.join(_ROOT, "experiments", "compare.py")
_STEPS = [0, 10, 20, 30]
_ONSET = {"metric": "sink_excess", "threshold": 1.5, "layer_reduce": "max"}
# sink_excess of layer 0 per run (layer 1 stays at 0.5), runs seed-minor over the brakes.
_A = {"brakes": [0.0, 0.1, 1.0],
      "sink": [[1, 2, 2, 2], [1, 1, 2, 2],   # onsets 10, 20 -> median 15
               [1, 1, 1, 2], [1, 1, 1, 1],   # onset 30, censored at 30 -> "> 30"
               [1, 1, 1, 1], [1, 1, 1, 1]]}  # none -> "> 30"
_B = {"brakes": [0.0, 0.1, 0.5],
      "sink": [[1, 2, 2, 2], [1, 2, 2, 2],   # onsets 10, 10 -> median 10
               [1, 1, 2, 2], [1, 2, 2, 2],   # onsets 20, 10 -> median 15
               [1, 1, 1, 1], [1, 1, 1, 1]],
      "extra": True}


def _sweep(spec, loss_offset, learning_rate=1e-3):
  runs = [{"run": i, "seed": i % 2, "brake": b, "learning_rate": learning_rate}
          for i, b in enumerate(b for b in spec["brakes"] for _ in range(2))]
  n = len(runs)
  sink = np.full((n, len(_STEPS), 2), 0.5, np.float32)
  sink[:, :, 0] = spec["sink"]
  logs = {"step": np.tile(np.asarray(_STEPS, np.int32), (n, 1)),
          "loss": np.tile(loss_offset + np.arange(n, dtype=np.float32)[:, None], (1, 4)),
          "sink_excess": sink,
          "effective_rank": np.linspace(1, 2, n * 8, dtype=np.float32).reshape(n, 4, 2),
          "top_source_weight": np.full((n, 4, 2), 0.5, np.float32),
          "top_source_uniform": np.full((n, 4, 2), 0.25, np.float32)}
  if spec.get("extra"):
    logs["shared_sources"] = np.full((n, 4, 2), 3.0, np.float32)
  return runs, logs


def _write_workdir(path, spec, loss_offset, router="attention", onset=_ONSET, **kwargs):
  """A finished sweep workdir written by outputs' own writers (tables and summary, no figures)."""
  os.makedirs(path)
  runs, logs = _sweep(spec, loss_offset, **kwargs)
  tables.write_tables(path, runs, logs, onset)
  tables.write_summary_json(os.path.join(path, "summary.json"), runs, logs, onset)
  with tables.atomic_open(os.path.join(path, "config.json")) as f:
    json.dump({"router": router}, f)
  return runs, logs


def _launch(*flags):
  return subprocess.run([sys.executable, _LAUNCHER, *flags], capture_output=True, text=True,
                        cwd=_ROOT, timeout=300, check=False)


class CompareTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.a, cls.b = (os.path.join(cls._tmp.name, name) for name in ("A", "B"))
    cls.a_runs, cls.a_logs = _write_workdir(cls.a, _A, 0.0)
    cls.b_runs, cls.b_logs = _write_workdir(cls.b, _B, 10.0)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def _workdir(self, name, *args, **kwargs):
    path = os.path.join(tempfile.mkdtemp(dir=self._tmp.name), name)
    _write_workdir(path, *args, **kwargs)
    return path

  def test_sweep_reads_back_what_was_written(self):
    sweep = compare.load_sweep(self.a)
    self.assertEqual((sweep.label, sweep.router, sweep.last_step), ("A", "attention", 30.0))
    self.assertEqual(sweep.runs, self.a_runs)
    self.assertEqual(sweep.logs["loss"].shape, (6, 4))  # named a scalar by summary.json
    np.testing.assert_array_equal(sweep.logs["sink_excess"], self.a_logs["sink_excess"])

  def test_table_on_the_union_of_grids_with_differences(self):
    result = compare.compare(compare.load_sweeps([self.a, self.b]))
    self.assertEqual(result.keys, ["brake"])
    self.assertEqual(result.points, [(0.0,), (0.1,), (0.5,), (1.0,)])
    self.assertEqual(result.names, ["sink_excess", "loss", "top_source_weight", "effective_rank",
                                    "shared_sources"])
    self.assertEqual(result.columns, ["brake", "quantity", "A", "B", "B-A"])
    table = {(row["brake"], row["quantity"]): row for row in result.rows}
    self.assertLen(table, 4 * (4 + 2 * 5))
    self._assert_row(table[0.0, "onset_median"], 15.0, 10.0, -5.0)
    self._assert_row(table[0.1, "onset_median"], math.nan, 15.0, math.nan)  # A: not reached
    self._assert_row(table[0.1, "onset_median_bound"], 30.0, math.nan, None)
    self._assert_row(table[0.0, "n_onset"], 2, 2, 0)
    self._assert_row(table[0.5, "n_runs"], math.nan, 2, math.nan)  # absent from A
    self._assert_row(table[1.0, "n_onset"], 0, math.nan, math.nan)  # absent from B
    # final loss: mean over the seeds of (offset + run index); B - A = 10 where both exist
    self._assert_row(table[0.1, "loss"], 2.5, 12.5, 10.0)
    self._assert_row(table[0.1, "loss_std"], np.std([2, 3], ddof=1), np.std([12, 13], ddof=1),
                     None)
    # effective_rank: max over layers at the last step (one layer reduction everywhere)
    a_rank = self.a_logs["effective_rank"][:2, -1].astype(str).astype(float).max(-1).mean()
    self._assert_row(table[0.0, "effective_rank"], a_rank, a_rank, 0.0)
    self._assert_row(table[0.0, "shared_sources"], math.nan, 3.0, math.nan)  # only B logs it

  def _assert_row(self, row, a, b, diff):
    for key, expected in (("A", a), ("B", b), ("B-A", diff)):
      if expected is None:
        self.assertIsNone(row[key], key)
      elif isinstance(expected, float) and math.isnan(expected):
        self.assertTrue(math.isnan(row[key]), f"{key}: {row[key]}")
      else:
        self.assertAlmostEqual(row[key], expected, msg=key)

  def test_digest_prints_onsets_and_differences(self):
    text = compare.digest(compare.compare(compare.load_sweeps([self.a, self.b], ["x", "y"])))
    lines = text.splitlines()
    self.assertIn("d_onset[y-x]", lines[0])
    self.assertEqual(lines[1].split()[:6], ["0", "2/2:", "15", "2/2:", "10", "-5"])
    self.assertIn("> 30", lines[2])

  def test_constant_learning_rates_are_sweep_attributes(self):
    other = self._workdir("C", _B, 10.0, learning_rate=3e-3)
    sweeps = compare.load_sweeps([self.a, other])
    self.assertEqual(compare.match_keys(sweeps), ["brake"])
    self.assertEqual([g.label for g in compare._groups(sweeps)], ["A lr=0.001", "C lr=0.003"])

  def test_a_swept_learning_rate_is_a_matching_key(self):
    path = os.path.join(tempfile.mkdtemp(dir=self._tmp.name), "LR")
    os.makedirs(path)
    (runs_a, logs_a), (runs_b, logs_b) = _sweep(_B, 0.0), _sweep(_B, 0.0, learning_rate=3e-3)
    runs = [dict(run, run=i) for i, run in enumerate(runs_a + runs_b)]
    logs = {name: np.concatenate([logs_a[name], logs_b[name]]) for name in logs_a}
    tables.write_tables(path, runs, logs, _ONSET)
    tables.write_summary_json(os.path.join(path, "summary.json"), runs, logs, _ONSET)
    with tables.atomic_open(os.path.join(path, "config.json")) as f:
      json.dump({"router": "ssm"}, f)
    result = compare.compare(compare.load_sweeps([self.a, path]))
    self.assertEqual(result.keys, ["brake", "learning_rate"])
    self.assertLen(result.points, 7)  # A's 3 points at lr 1e-3, LR's 3 brakes x 2 rates, 2 shared
    row = next(r for r in result.rows if r["quantity"] == "onset_median"
               and (r["brake"], r["learning_rate"]) == (0.0, 1e-3))
    self.assertEqual((row["A"], row["LR"], row["LR-A"]), (15.0, 10.0, -5.0))

  def test_incompatible_workdirs_raise_one_line_errors(self):
    cases = {
        "does not exist": [self.a, os.path.join(self._tmp.name, "nowhere")],
        "at least two": [self.a],
        "onset definitions differ": [self.a, self._workdir(
            "T", _B, 0.0, onset=dict(_ONSET, threshold=1.2))],
        "shares no": [self.a, self._workdir("D", dict(_B, brakes=[2.0, 3.0, 4.0]), 0.0)],
    }
    unfinished = os.path.join(tempfile.mkdtemp(dir=self._tmp.name), "U")
    shutil.copytree(self.b, unfinished)
    os.remove(os.path.join(unfinished, "summary.json"))
    cases["unfinished or not a sweep workdir: no summary.json"] = [self.a, unfinished]
    for message, workdirs in cases.items():
      with self.assertRaisesRegex(compare.CompareError, message):
        compare.compare(compare.load_sweeps(workdirs))
    with self.assertRaisesRegex(compare.CompareError, "labels"):
      compare.load_sweeps([self.a, self.b], ["x"])

  @pytest.mark.slow
  def test_launcher_end_to_end(self):
    out = os.path.join(tempfile.mkdtemp(dir=self._tmp.name), "cmp")
    result = _launch(f"--workdirs={self.a},{self.b}", f"--out={out}", "--labels=base,new")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("d_onset[new-base]", result.stdout)
    self.assertEqual(sorted(os.listdir(out)), ["comparison.csv", "final_metrics_vs_brake.png",
                                               "onset_vs_brake.png"])
    with open(os.path.join(out, "comparison.csv"), newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["brake"] == "0.0" and r["quantity"] == "onset_median")
    self.assertEqual((row["base"], row["new"], row["new-base"]), ("15.0", "10.0", "-5.0"))
    for name in ("final_metrics_vs_brake.png", "onset_vs_brake.png"):
      with open(os.path.join(out, name), "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  @pytest.mark.slow
  def test_launcher_missing_workdir_exits_2_with_one_line(self):
    missing = os.path.join(self._tmp.name, "missing")
    result = _launch(f"--workdirs={self.a},{missing}", f"--out={self._tmp.name}/o")
    self.assertEqual(result.returncode, 2)
    self.assertEqual(result.stderr.strip().splitlines()[-1],
                     f"error: workdir {missing} does not exist")
    self.assertFalse(os.path.exists(f"{self._tmp.name}/o"))


if __name__ == "__main__":
  absltest.main()

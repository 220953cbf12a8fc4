"""Sweep output writers: tidy tables, onsets, strict JSON summary, figures, atomic writes."""

import csv
import json
import math
import os
import tempfile
from unittest import mock

from absl.testing import absltest, parameterized
import numpy as np

from rc_jax import outputs, plots

_STEPS = [0, 10, 20, 30, 40]
_BRAKES = [0.0, 0.1, 1.0]
_SCALARS = ["loss", "probe_loss", "probe_accuracy"]
_PER_LAYER = ["sink_mass", "sink_rate", "top_source_weight", "top_source_uniform",
              "routing_entropy", "hub_count", "key_norm_cv", "key_norm_log_spread",
              "norm_mass_correlation", "effective_rank", "rank_collapse_residual",
              "massive_activation_ratio"]
# sink_mass [run, layer, step]; runs are seed-minor: run = 2 * brake_index + seed. Run 5 diverges.
_SINK = [
    [[0.1, 0.6, 0.7, 0.8, 0.9], [0.2, 0.3, 0.4, 0.6, 0.9]],
    [[0.1, 0.2, 0.6, 0.4, 0.7], [0.1, 0.1, 0.1, 0.1, 0.1]],
    [[0.1, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.9, 0.9]],
    [[0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]],
    [[0.3, 0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3, 0.6]],
    [[0.3, 0.3, 0.3, np.nan, np.nan], [0.3, 0.3, 0.3, np.nan, np.nan]],
]
_INF = math.inf
# Onset steps at threshold 0.5, by hand (run 1 dips back below at step 30; 0.5 is not above 0.5).
_ONSETS = {"max": [10, 40, 30, _INF, 40, _INF], "mean": [20, _INF, _INF, _INF, _INF, _INF],
           1: [30, _INF, 30, _INF, 40, _INF]}
_ONSET = {"metric": "sink_mass", "threshold": 0.5, "layer_reduce": "max"}


def _runs(brakes=_BRAKES, seeds=2, learning_rates=(1e-3,)):
  grid = [(lr, b, s) for lr in learning_rates for b in brakes for s in range(seeds)]
  return [{"run": i, "seed": s, "brake": b, "learning_rate": lr}
          for i, (lr, b, s) in enumerate(grid)]


def _logs(n_runs=6, n_layers=2, sink=None):
  """Synthetic float32 logs for `n_runs` runs over `_STEPS`; last run diverged when n_runs == 6."""
  rng = np.random.default_rng(0)
  shape = (n_runs, len(_STEPS), n_layers)
  logs = {"step": np.tile(np.asarray(_STEPS, np.int32), (n_runs, 1))}
  logs.update((name, rng.uniform(0.5, 2.0, shape[:2]).astype(np.float32)) for name in _SCALARS)
  logs.update((name, rng.uniform(0.0, 1.0, shape).astype(np.float32)) for name in _PER_LAYER)
  logs["top_source_uniform"][:] = 0.25
  logs["norm_mass_correlation"][:, 0, :] = np.nan
  if sink is not None:
    logs["sink_mass"] = np.asarray(sink, np.float32).transpose(0, 2, 1)
  if n_runs == 6:
    logs["loss"][5, -1] = np.nan
    for name in _PER_LAYER:
      logs[name][5, 3:] = np.nan
  return logs


def _strict_json(text):
  def reject(token):
    raise ValueError(f"non-strict JSON token {token}")
  return json.loads(text, parse_constant=reject)


def _read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def _assert_png(test, path):
  with open(path, "rb") as f:
    data = f.read()
  test.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
  test.assertGreater(len(data), 10_000)


class TablesTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.runs, self.logs = _runs(), _logs(sink=_SINK)

  def test_metrics_table_has_one_row_per_run_step_layer(self):
    rows = outputs.metrics_table(self.runs, self.logs)
    self.assertLen(rows, 6 * 5 * 2)
    expected = ["run", "seed", "brake", "learning_rate", "step", "layer"] + _SCALARS + _PER_LAYER
    self.assertEqual(outputs.metrics_columns(self.runs, self.logs), expected)
    self.assertEqual(list(rows[0]), expected)
    row = rows[3 * 10 + 2 * 2 + 1]  # run 3, step index 2, layer 1
    self.assertEqual((row["run"], row["seed"], row["brake"], row["step"], row["layer"]),
                     (3, 1, 0.1, 20, 1))
    self.assertEqual(row["loss"], float(str(self.logs["loss"][3, 2])))
    self.assertEqual(row["sink_mass"], 0.2)

  def test_metrics_csv_round_trips_values_and_nan(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = outputs.write_metrics_csv(os.path.join(tmp, "metrics.csv"), self.runs, self.logs)
      header, rows = _read_csv(path)
    self.assertEqual(header, outputs.metrics_columns(self.runs, self.logs))
    self.assertLen(rows, 60)
    n_nan = 0
    for i, row in enumerate(rows):
      r, k, layer = i // 10, (i // 2) % 5, i % 2
      self.assertEqual((int(row["run"]), int(row["step"]), int(row["layer"])),
                       (r, _STEPS[k], layer))
      for name in _SCALARS + _PER_LAYER:
        value = self.logs[name][r, k] if name in _SCALARS else self.logs[name][r, k, layer]
        np.testing.assert_array_equal(np.float32(float(row[name])), value)
        n_nan += math.isnan(float(row[name]))
    self.assertGreater(n_nan, 0)

  @parameterized.parameters("max", "mean", 1)
  def test_onset_steps_match_hand_computed(self, layer_reduce):
    onset = dict(_ONSET, layer_reduce=layer_reduce)
    np.testing.assert_array_equal(outputs.onset_steps(self.logs, onset), _ONSETS[layer_reduce])
    table = outputs.onset_table(self.runs, self.logs, onset)
    self.assertEqual([row["onset_step"] for row in table],
                     [None if math.isinf(s) else s for s in _ONSETS[layer_reduce]])
    self.assertEqual(table[0]["layer_reduce"], layer_reduce)

  def test_onsets_csv_is_empty_when_never(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = outputs.write_onsets_csv(os.path.join(tmp, "onsets.csv"), self.runs, self.logs, _ONSET)
      header, rows = _read_csv(path)
    self.assertEqual(header, ["run", "seed", "brake", "learning_rate", "metric", "threshold",
                              "layer_reduce", "onset_step"])
    self.assertEqual([row["onset_step"] for row in rows], ["10.0", "40.0", "30.0", "", "40.0", ""])
    self.assertEqual(rows[0]["metric"], "sink_mass")

  def test_bad_layer_reduce_and_mismatched_runs_raise(self):
    with self.assertRaisesRegex(ValueError, "layer_reduce"):
      outputs.onset_steps(self.logs, dict(_ONSET, layer_reduce="median"))
    with self.assertRaisesRegex(ValueError, "runs"):
      outputs.metrics_table(self.runs[:5], self.logs)


class SummaryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.runs, self.logs = _runs(), _logs(sink=_SINK)

  def test_summary_is_strict_json_and_counts(self):
    extra = {"wall_s": np.float32(1.5), "compile_s": float("nan")}
    with tempfile.TemporaryDirectory() as tmp:
      path = outputs.write_summary_json(os.path.join(tmp, "s.json"), self.runs, self.logs, _ONSET,
                                        extra)
      with open(path, encoding="utf-8") as f:
        data = _strict_json(f.read())
    self.assertEqual((data["n_runs"], data["n_steps_logged"], data["last_step"]), (6, 5, 40))
    self.assertEqual((data["diverged"], data["n_diverged"]), ([5], 1))
    self.assertEqual((data["wall_s"], data["compile_s"]), (1.5, None))
    final = data["runs"][0]["final"]
    self.assertEqual(final["sink_mass"], {"mean": 0.9, "max": 0.9})
    self.assertIsNone(data["runs"][5]["final"]["loss"])
    self.assertIsNone(data["runs"][5]["onset_step"])
    by_brake = {row["brake"]: row for row in data["by_brake"]}
    self.assertEqual(list(by_brake), _BRAKES)
    self.assertEqual(by_brake[0.0]["n_onset"], 2)
    self.assertEqual(by_brake[0.0]["onset_step"]["mean"], 25.0)
    self.assertAlmostEqual(by_brake[0.0]["onset_step"]["std"], np.std([10, 40], ddof=1))
    self.assertEqual(by_brake[1.0]["final_concentration"]["n"], 1)  # the diverged run drops out
    self.assertEqual(by_brake[0.1]["runs"], [2, 3])

  def test_extra_clashing_with_summary_keys_raises(self):
    with self.assertRaisesRegex(ValueError, "n_runs"):
      outputs.summary(self.runs, self.logs, _ONSET, {"n_runs": 3})


class WriteAllTest(absltest.TestCase):

  def test_write_all_writes_every_file(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    with tempfile.TemporaryDirectory() as tmp:
      paths = outputs.write_all(tmp, runs, logs, _ONSET, {"wall_s": 2.0})
      self.assertEqual(set(paths), {"metrics", "onsets", "summary", "phase_diagram",
                                    "onset_vs_brake", "final_metrics_vs_brake"})
      for name in ("metrics.csv", "onsets.csv", "summary.json"):
        self.assertEqual(paths[name.split(".")[0]], os.path.join(tmp, name))
      for name in ("phase_diagram", "onset_vs_brake", "final_metrics_vs_brake"):
        self.assertEqual(os.path.dirname(paths[name]), os.path.join(tmp, "figures"))
        _assert_png(self, paths[name])
      self.assertEqual(sorted(os.listdir(tmp)),
                       ["figures", "metrics.csv", "onsets.csv", "summary.json"])

  def test_crash_mid_write_leaves_no_partial_file(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    rows = list(outputs.metric_rows(runs, logs))

    def crashing_rows(*_):
      yield from rows[:7]
      raise RuntimeError("crash")

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "metrics.csv")
      with mock.patch.object(outputs, "metric_rows", crashing_rows):
        with self.assertRaisesRegex(RuntimeError, "crash"):
          outputs.write_metrics_csv(path, runs, logs)
      self.assertEqual(os.listdir(tmp), [])
      with open(path, "w", encoding="utf-8") as f:
        f.write("old")
      with mock.patch.object(outputs, "metric_rows", crashing_rows):
        with self.assertRaisesRegex(RuntimeError, "crash"):
          outputs.write_metrics_csv(path, runs, logs)
      with open(path, encoding="utf-8") as f:
        self.assertEqual(f.read(), "old")
      self.assertEqual(os.listdir(tmp), ["metrics.csv"])

  def test_crash_while_saving_a_figure_leaves_no_partial_png(self):
    def partial_save(_, f, **__):
      f.write(b"\x89PNG")
      raise RuntimeError("crash")

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "onset.png")
      with mock.patch.object(plots.Figure, "savefig", partial_save):
        with self.assertRaisesRegex(RuntimeError, "crash"):
          plots.onset_vs_brake(path, _runs(), _ONSETS["max"])
      self.assertEqual(os.listdir(tmp), [])


class PlotsEdgeCasesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("single_run", dict(brakes=[0.3], seeds=1)),
      ("single_brake", dict(brakes=[0.3], seeds=3)),
      ("single_seed", dict(seeds=1)),
      ("two_learning_rates_log_brakes", dict(brakes=[0.0, 0.01, 0.1, 1.0],
                                             learning_rates=(1e-3, 3e-3))),
  )
  def test_figures_render(self, grid):
    runs = _runs(**grid)
    logs = _logs(n_runs=len(runs))
    logs["norm_mass_correlation"][:] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
      paths = [
          plots.phase_diagram(os.path.join(tmp, "a.png"), runs, logs, "sink_mass", "mean"),
          plots.onset_vs_brake(os.path.join(tmp, "b.png"), runs,
                               outputs.onset_steps(logs, _ONSET)),
          plots.final_metrics_vs_brake(os.path.join(tmp, "c.png"), runs, logs),
      ]
      for path in paths:
        _assert_png(self, path)

  def test_all_nan_metric_and_no_onsets_render(self):
    runs, logs = _runs(), _logs()
    logs["sink_mass"][:] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
      _assert_png(self, plots.phase_diagram(os.path.join(tmp, "a.png"), runs, logs, "sink_mass", 0))
      _assert_png(self, plots.onset_vs_brake(os.path.join(tmp, "b.png"), runs, [None] * 6))


if __name__ == "__main__":
  absltest.main()

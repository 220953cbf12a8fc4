"""Sweep outputs: tidy tables, censored onsets, strict JSON summary, figures, atomic writes."""

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest, parameterized
from matplotlib.backends.backend_agg import FigureCanvasAgg
import numpy as np
import pytest

from rc_jax.outputs import artifacts, plots, tables

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
    rows = tables.metrics_table(self.runs, self.logs)
    self.assertLen(rows, 6 * 5 * 2)
    expected = ["run", "seed", "brake", "learning_rate", "step", "layer"] + _SCALARS + _PER_LAYER
    self.assertEqual(tables.metrics_columns(self.runs, self.logs), expected)
    self.assertEqual(list(rows[0]), expected)
    row = rows[3 * 10 + 2 * 2 + 1]  # run 3, step index 2, layer 1
    self.assertEqual((row["run"], row["seed"], row["brake"], row["step"], row["layer"]),
                     (3, 1, 0.1, 20, 1))
    self.assertEqual(row["loss"], float(str(self.logs["loss"][3, 2])))
    self.assertEqual(row["sink_mass"], 0.2)

  def test_metrics_csv_round_trips_values_and_nan(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = tables.write_metrics_csv(os.path.join(tmp, "metrics.csv"), self.runs, self.logs)
      header, rows = _read_csv(path)
    self.assertEqual(header, tables.metrics_columns(self.runs, self.logs))
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
    np.testing.assert_array_equal(tables.onset_steps(self.logs, onset), _ONSETS[layer_reduce])
    table = tables.onset_table(self.runs, self.logs, onset)
    self.assertEqual([row["onset_step"] for row in table],
                     [None if math.isinf(s) else s for s in _ONSETS[layer_reduce]])
    self.assertEqual(table[0]["layer_reduce"], layer_reduce)

  def test_onsets_csv_is_empty_when_never(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = tables.write_onsets_csv(os.path.join(tmp, "onsets.csv"), self.runs, self.logs, _ONSET)
      header, rows = _read_csv(path)
    self.assertEqual(header, ["run", "seed", "brake", "learning_rate", "metric", "threshold",
                              "rise", "layer_reduce", "onset_step", "censored", "censor_step",
                              "pre_existing"])
    self.assertEqual([row["onset_step"] for row in rows], ["10.0", "40.0", "30.0", "", "40.0", ""])
    self.assertEqual([row["censored"] for row in rows], ["False"] * 3 + ["True", "False", "True"])
    # run 3 is censored at the budget; run 5 diverged (NaN from step 30): at its last finite step
    self.assertEqual([row["censor_step"] for row in rows], ["", "", "", "40.0", "", "20.0"])
    self.assertEqual(rows[0]["metric"], "sink_mass")

  def test_bad_layer_reduce_and_mismatched_runs_raise(self):
    with self.assertRaisesRegex(ValueError, "layer_reduce"):
      tables.onset_steps(self.logs, dict(_ONSET, layer_reduce="median"))
    with self.assertRaisesRegex(ValueError, "runs"):
      tables.metrics_table(self.runs[:5], self.logs)


class SummaryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.runs, self.logs = _runs(), _logs(sink=_SINK)

  def test_summary_is_strict_json_and_counts(self):
    extra = {"wall_s": np.float32(1.5), "compile_s": float("nan")}
    with tempfile.TemporaryDirectory() as tmp:
      path = tables.write_summary_json(os.path.join(tmp, "s.json"), self.runs, self.logs, _ONSET,
                                        extra)
      with open(path, encoding="utf-8") as f:
        data = _strict_json(f.read())
    self.assertEqual((data["n_runs"], data["n_steps_logged"], data["last_step"]), (6, 5, 40))
    self.assertEqual((data["diverged"], data["n_diverged"]), ([5], 1))
    self.assertEqual((data["wall_s"], data["compile_s"]), (1.5, None))
    self.assertEqual(data["layer_reduce"], "max")
    self.assertEqual(data["logged"], {"scalars": _SCALARS, "per_layer": _PER_LAYER})
    final = data["runs"][1]["final"]  # one layer reduction (the onset's "max") everywhere
    self.assertEqual(final["sink_mass"], 0.7)  # layers end at 0.7 and 0.1
    self.assertEqual(final["effective_rank"], float(str(self.logs["effective_rank"][1, -1].max())))
    self.assertIsNone(data["runs"][5]["final"]["loss"])
    self.assertEqual([data["runs"][r]["onset_step"] for r in (3, 5)], [None, None])
    self.assertEqual([data["runs"][r]["censor_step"] for r in (3, 5)], [40, 20])
    self.assertEqual([run["censored"] for run in data["runs"]], [False] * 3 + [True, False, True])
    by_brake = {row["brake"]: row for row in data["by_brake"]}
    self.assertEqual(list(by_brake), _BRAKES)
    self.assertNotIn("onset_step", by_brake[0.0])  # the mean over the runs with an onset is gone
    # brake 0: onsets 10, 40 -> KM: S = 1/2 on [10, 40), the midpoint 25
    self.assertEqual((by_brake[0.0]["n_onset"], by_brake[0.0]["n_censored"]), (2, 0))
    self.assertEqual(by_brake[0.0]["onset_median"], 25.0)
    self.assertEqual(by_brake[0.0]["onset_km"], {"step": [10.0, 40.0], "survival": [0.5, 0.0],
                                                 "at_risk": [2, 1], "events": [1, 1]})
    # brake 0.1: onset 30, censored at 40 -> S = 1/2 from 30 to the end: median > (30 + 40) / 2
    row = by_brake[0.1]
    self.assertEqual((row["n_onset"], row["onset_median"], row["onset_median_reached"],
                      row["onset_median_bound"], row["onset_median_text"]),
                     (1, None, False, 35.0, "> 35"))
    # brake 1: onset 40, the diverged run censored at 20 leaves the risk set first -> S(40) = 0
    self.assertEqual((by_brake[1.0]["onset_median"], by_brake[1.0]["onset_median_text"]),
                     (40.0, "40"))
    self.assertEqual(by_brake[1.0]["final_concentration"]["n"], 1)  # the diverged run drops out
    self.assertEqual(by_brake[1.0]["final"]["sink_mass"], by_brake[1.0]["final_concentration"])
    self.assertAlmostEqual(by_brake[0.0]["final"]["sink_mass"]["mean"], 0.8)
    self.assertEqual(by_brake[0.1]["runs"], [2, 3])

  def test_extra_clashing_with_summary_keys_raises(self):
    with self.assertRaisesRegex(ValueError, "n_runs"):
      tables.summary(self.runs, self.logs, _ONSET, {"n_runs": 3})


class OnsetSummaryTest(absltest.TestCase):

  def test_onset_summary_csv_is_censoring_aware(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    with tempfile.TemporaryDirectory() as tmp:
      path = tables.write_onset_summary_csv(os.path.join(tmp, "o.csv"), runs, logs, _ONSET)
      header, rows = _read_csv(path)
    self.assertEqual(header, ["brake", "learning_rate", "metric", "threshold", "rise",
                              "layer_reduce", "n_runs", "n_onset", "n_censored", "n_pre_existing",
                              "onset_median",
                              "onset_median_reached", "onset_median_bound", "onset_median_text",
                              "budget_step"])
    self.assertEqual([(r["brake"], r["n_onset"], r["n_runs"], r["onset_median"],
                       r["onset_median_bound"], r["onset_median_text"]) for r in rows],
                     [("0.0", "2", "2", "25.0", "", "25"), ("0.1", "1", "2", "", "35.0", "> 35"),
                      ("1.0", "1", "2", "40.0", "", "40")])
    self.assertEqual({(r["layer_reduce"], r["budget_step"]) for r in rows}, {("max", "40")})

  def test_mean_layer_reduction_is_used_throughout(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    onset = dict(_ONSET, layer_reduce="mean")
    data = tables.summary(runs, logs, onset)
    self.assertEqual(data["layer_reduce"], "mean")
    self.assertAlmostEqual(data["runs"][1]["final"]["sink_mass"], 0.4)
    rows = tables.onset_summary_table(runs, logs, onset)
    self.assertEqual([r["n_onset"] for r in rows], [1, 0, 0])
    self.assertEqual(rows[0]["onset_median_text"], "> 30")  # onset 20, censored 40


class ReadMetricsTest(absltest.TestCase):

  def test_metrics_csv_reads_back_into_runs_and_logs(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    with tempfile.TemporaryDirectory() as tmp:
      path = tables.write_metrics_csv(os.path.join(tmp, "m.csv"), runs, logs)
      read_runs, read_logs = tables.read_metrics_csv(path, _SCALARS)
      _, untyped_logs = tables.read_metrics_csv(path)
    self.assertEqual(read_runs, runs)
    self.assertEqual(list(read_logs), list(logs))
    for name, value in logs.items():
      self.assertEqual(read_logs[name].shape, value.shape)
      np.testing.assert_array_equal(read_logs[name].astype(np.float32), value)
    self.assertEqual(untyped_logs["loss"].shape, (6, 5, 2))  # scalars not named: repeated
    np.testing.assert_array_equal(tables.onset_steps(read_logs, _ONSET), _ONSETS["max"])

  def test_malformed_metrics_csv_raises(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "m.csv")
      for text in ("a,b\n1,2\n", "run,step,layer,x\n0,0,0,1\n0,0,1\n",
                   "run,step,layer,x\n0,0,0,1\n0,0,1,2\n0,10,0,3\n"):
        with open(path, "w", encoding="utf-8") as f:
          f.write(text)
        with self.assertRaisesRegex(ValueError, "m.csv"):
          tables.read_metrics_csv(path)


@pytest.mark.slow
class LayeringTest(absltest.TestCase):

  def test_tables_do_not_import_figures(self):
    code = ("import sys, rc_jax.outputs.tables; "
            "print(sorted(m for m in sys.modules if m.startswith(("
            "'matplotlib', 'rc_jax.outputs.plots', 'rc_jax.outputs.artifacts'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    self.assertEqual(result.stdout.strip(), "[]")


class WriteAllTest(absltest.TestCase):

  def test_write_all_writes_every_file(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    with tempfile.TemporaryDirectory() as tmp:
      paths = artifacts.write_all(tmp, runs, logs, _ONSET, {"wall_s": 2.0, "router": "graph"})
      figures = ("phase_diagram", "onset_vs_brake", "onset_survival", "final_metrics_vs_brake")
      self.assertEqual(set(paths), {"metrics", "onsets", "onset_summary", "summary", *figures})
      for name in ("metrics.csv", "onsets.csv", "onset_summary.csv", "summary.json"):
        self.assertEqual(paths[name.split(".")[0]], os.path.join(tmp, name))
      for name in figures:
        self.assertEqual(os.path.dirname(paths[name]), os.path.join(tmp, "figures"))
        _assert_png(self, paths[name])
      self.assertEqual(sorted(os.listdir(tmp)), ["figures", "metrics.csv", "onset_summary.csv",
                                                 "onsets.csv", "summary.json"])
      with open(paths["summary"], encoding="utf-8") as f:
        self.assertEqual(_strict_json(f.read())["router"], "graph")

  def test_router_name_from_extra(self):
    self.assertEqual(artifacts.router_of({"router": "ssm"}), "ssm")
    self.assertEqual(artifacts.router_of({"config": {"router": "depth"}}), "depth")
    self.assertIsNone(artifacts.router_of({"timings": {}}))
    self.assertIsNone(artifacts.router_of(None))
    self.assertEqual(plots.brake_label("attention"), "brake β (per token of lag)")
    self.assertEqual(plots.brake_label("graph"), "brake β (per hop)")
    self.assertEqual(plots.brake_label("ssm"), plots.brake_label("rwkv"))
    self.assertIn("extra decay per step", plots.brake_label("rwkv"))
    self.assertEqual(plots.brake_label("depth"), "brake β (per layer of depth)")
    self.assertEqual(plots.brake_label(None), plots.DEFAULT_BRAKE_LABEL)

  def test_crash_mid_write_leaves_no_partial_file(self):
    runs, logs = _runs(), _logs(sink=_SINK)
    rows = list(tables.metric_rows(runs, logs))

    def crashing_rows(*_):
      yield from rows[:7]
      raise RuntimeError("crash")

    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "metrics.csv")
      with mock.patch.object(tables, "metric_rows", crashing_rows):
        with self.assertRaisesRegex(RuntimeError, "crash"):
          tables.write_metrics_csv(path, runs, logs)
      self.assertEqual(os.listdir(tmp), [])
      with open(path, "w", encoding="utf-8") as f:
        f.write("old")
      with mock.patch.object(tables, "metric_rows", crashing_rows):
        with self.assertRaisesRegex(RuntimeError, "crash"):
          tables.write_metrics_csv(path, runs, logs)
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
          plots.onset_vs_brake(path, _runs(), _logs(sink=_SINK), _ONSET)
      self.assertEqual(os.listdir(tmp), [])


def _overlaps(boxes):
  return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


class BrakeAxisTest(parameterized.TestCase):

  def test_positions_are_categorical_and_labels_thinned_with_both_ends(self):
    brakes = [0.0] + list(np.geomspace(1e-3, 2.0, 15))
    axis = plots.BrakeAxis(brakes[::-1] + brakes)
    np.testing.assert_array_equal(axis.positions([0.0, brakes[1], 2.0]), [0, 1, 15])
    fig = plots.Figure(figsize=(4.0, 3.3))
    ax = fig.subplots()
    axis.apply(ax, "brake")
    labels = [t.get_text() for t in ax.get_xticklabels()]
    self.assertEqual(labels, [f"{brakes[i]:.3g}" for i in (0, 3, 6, 9, 12, 15)])
    self.assertEqual((labels[0], labels[-1]), ("0", "2"))
    ticks = set(ax.get_xticks()) | set(ax.get_xticks(minor=True))  # a tick at every brake
    self.assertEqual(ticks, set(range(16)))

  @parameterized.parameters(2, 5, 9, 16, 40)
  def test_tick_labels_never_overlap_in_a_small_panel(self, n_brakes):
    brakes = [0.0] + list(np.round(np.geomspace(1e-3, 2.0, n_brakes - 1), 4))
    fig = plots.Figure(figsize=(4.0, 3.3), layout="constrained")
    ax = fig.subplots()
    plots.BrakeAxis(brakes).apply(ax, "brake β (per hop)")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
    self.assertEqual(_overlaps(boxes), [])


@pytest.mark.slow
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
    onset = dict(_ONSET, layer_reduce="mean")
    with tempfile.TemporaryDirectory() as tmp:
      paths = [
          plots.phase_diagram(os.path.join(tmp, "a.png"), runs, logs, onset),
          plots.onset_vs_brake(os.path.join(tmp, "b.png"), runs, logs, onset),
          plots.final_metrics_vs_brake(os.path.join(tmp, "c.png"), runs, logs, onset),
          plots.onset_survival(os.path.join(tmp, "d.png"), runs, logs, onset),
      ]
      for path in paths:
        _assert_png(self, path)

  def test_all_nan_metric_and_no_onsets_render(self):
    runs, logs = _runs(), _logs()
    logs["sink_mass"][:] = np.nan
    onset = dict(_ONSET, layer_reduce=0)
    with tempfile.TemporaryDirectory() as tmp:
      _assert_png(self, plots.phase_diagram(os.path.join(tmp, "a.png"), runs, logs, onset))
      _assert_png(self, plots.onset_vs_brake(os.path.join(tmp, "b.png"), runs, logs, onset))
      _assert_png(self, plots.onset_survival(os.path.join(tmp, "c.png"), runs, logs, onset))


if __name__ == "__main__":
  absltest.main()

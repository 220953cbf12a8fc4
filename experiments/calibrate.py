"""Prints the onset-threshold calibration that `configs/report.py` records.

    python experiments/calibrate.py --preset=cpu [--seeds=8]

For every family, the concentration statistic at initialisation (seeds 100.. x every brake of the
preset's grid x the family's tasks) and on its positional-prior twin; the threshold is
`max(floor, safety x the largest of them)` (`rc_jax.report.calibration`).
"""

from __future__ import annotations

import json

from absl import app, flags

from rc_jax.report import calibration

_PRESET = flags.DEFINE_enum("preset", "cpu", ["tiny", "cpu", "paper"], "Size of every sweep.")
_SEEDS = flags.DEFINE_integer("seeds", 8, "Initialisations per brake and task.", lower_bound=2)
_METRIC = flags.DEFINE_string("metric", "hub_excess", "The concentration statistic.")
_FLOOR = flags.DEFINE_float("floor", 0.1, "Least threshold (in the statistic's units).")
_SAFETY = flags.DEFINE_float("safety", 1.5, "Factor over the largest null value.", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  table = calibration.calibrate(_PRESET.value, _METRIC.value, seeds=_SEEDS.value,
                                floor=_FLOOR.value, safety=_SAFETY.value)
  print(json.dumps(table, indent=1))


if __name__ == "__main__":
  app.run(main)

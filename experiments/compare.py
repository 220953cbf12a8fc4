"""Compares finished sweeps side by side.

    python experiments/compare.py --workdirs=runs/attention,runs/attention_alibi --out=runs/cmp \
        [--labels=shared,alibi]

Reads each workdir's config.json, metrics.csv, onsets.csv and summary.json; writes comparison.csv,
onset_vs_brake.png and final_metrics_vs_brake.png into --out and prints the per-brake digest
(differences: each sweep minus the first). Grid points are compared on the union of the sweeps'
grids (NaN where a sweep lacks one); see `rc_jax.outputs.compare`. A missing or unfinished workdir,
or sweeps that cannot be compared, exit with code 2 and one error line.
"""

from __future__ import annotations

import sys

from absl import app, flags

from rc_jax.outputs import compare

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Comma-separated finished sweep workdirs (>= 2); "
                              "differences are taken against the first.")
_OUT = flags.DEFINE_string("out", None, "Output directory for the comparison.")
_LABELS = flags.DEFINE_list("labels", None, "Comma-separated labels, one per workdir "
                            "(default: the workdirs' directory names).")


def _fail(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl flag parsing; a bad flag exits with code 2 and one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as err:
    _fail(str(err).splitlines()[0])


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIRS.value or not _OUT.value:
    _fail("--workdirs and --out are required")
  try:
    sweeps = compare.load_sweeps(_WORKDIRS.value, _LABELS.value)
    comparison, paths = compare.write_comparison(_OUT.value, sweeps)
  except compare.CompareError as err:
    _fail(str(err))
  print(compare.digest(comparison))
  for name, path in sorted(paths.items()):
    print(f"  {name}: {path}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)

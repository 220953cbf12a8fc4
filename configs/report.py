"""The report's suite and verdict rules, fixed before any sweep is run.

    python experiments/report.py --preset=cpu --workdir=runs/report

Every margin below is the smallest effect the report calls real (in the metric's own units, or
relative to the null where `relative=True`); the rules that use them are in `rc_jax/report/stats.py`.
Changing anything here after seeing results defeats the report: do not.
"""

import ml_collections


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  # one-sided confidence for "beyond the margin" (Student t over seeds, paired by seed)
  c.confidence = 0.95
  # signature components: metric, predicted direction (+1 increase, -1 decrease), margin, relative
  c.signature = dict(
      concentration=dict(metric="shared_sources", direction=1, margin=0.25, relative=False),
      collapse=dict(metric="effective_rank_routed", direction=-1, margin=0.10, relative=True),
      stratification=dict(metric="key_norm_cv", direction=1, margin=0.25, relative=True),
  )
  # claim 2 (and the RWKV carry sweep): "early -> late -> never" across the brake range
  c.onset = dict(min_fraction=0.5)   # a brake "has an onset" when at least this share of seeds do
  # claim 6: the norm-aware score reduces concentration by at least the concentration margin
  # Exploratory (added after the first cpu sweeps, so reported without a verdict): claim 2's rule
  # on onsets of the sink on the fixed first source, alpha_0 over its positional prior's, > 1.5 in
  # some layer. The primary onset (the sweeps' `metrics.onset_metric`, shared_sources > 0.25) was
  # found at 0.28-0.5 in untrained attention (random-init content scores make spurious shared
  # sources), which trained attention then fell below.
  c.exploratory_onset = dict(metric="sink_excess_prior", threshold=1.5, layer_reduce="max")
  return c

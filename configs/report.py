"""The report's statistic, nulls, thresholds and verdict rules.

    python experiments/report.py --preset=cpu --workdir=runs/report

Version 2 (issue 14). Version 1's rules (`results/cpu/REPORT_v1.md`) were fixed before any sweep
ran; every change below was made after seeing v1's results and its failed positive controls, and
is listed with its reason in the report's section "What changed after v1, and why". Margins are
the smallest effects the report calls real, in the metric's own units (or relative to the null,
floored, where `relative=True`); the rules that use them are in `rc_jax/measurement/stats.py`.
"""

import ml_collections

# `python experiments/calibrate.py --preset=cpu` (rc_jax/report/calibration.py), run 2026-12-04
# before the v2 sweeps: hub_excess (max over layers) at initialisation for seeds 100-107 x every
# brake of the cpu grid x the family's tasks, and on the positional-prior twin (0 by construction:
# its routing is its prior). threshold = max(floor 0.1, 1.5 x the largest null value).
CALIBRATION = {
    "attention": dict(n_init=128, init_mean=0.0268, init_q99=0.0931, init_max=0.1044,
                      prior_max=0.0, threshold=0.157),
    "graph": dict(n_init=64, init_mean=0.0289, init_q99=0.0769, init_max=0.0773, prior_max=0.0,
                  threshold=0.116),
    "ssm": dict(n_init=128, init_mean=0.0126, init_q99=0.021, init_max=0.0217, prior_max=0.0,
                threshold=0.1),
    "rwkv": dict(n_init=128, init_mean=0.0062, init_q99=0.0281, init_max=0.0337, prior_max=0.0,
                 threshold=0.1),
    "depth": dict(n_init=128, init_mean=0.0, init_q99=0.0, init_max=0.0, prior_max=0.0,
                  threshold=0.1),
}


def get_config(arg: str = ""):
  del arg
  c = ml_collections.ConfigDict()
  # one-sided confidence for "beyond the margin" (Student t over seeds, paired by seed), and the
  # power at which each component's minimum detectable effect is stated
  c.calibration = CALIBRATION
  c.confidence = 0.95
  c.power = 0.8
  # The concentration statistic (rc_jax.measurement.metrics.hub_excess: per head, the largest share
  # of its routing mass one source takes beyond the router's positional prior; max over heads, then
  # max over layers) and its onset: above the family's calibrated threshold and `rise` above the
  # run's own step-0 value; a run above the threshold at step 0 is pre-existing, never an onset.
  # `threshold` is the largest family threshold: the level for a router of no family (pretrained
  # models, planted controls read against every family).
  c.concentration = dict(
      metric="hub_excess", layer_reduce="max", rise=0.05, floor=0.1, safety=1.5,
      thresholds={family: values["threshold"] for family, values in CALIBRATION.items()},
      threshold=max(values["threshold"] for values in CALIBRATION.values()))
  # Signature components: metric, predicted direction (+1 increase, -1 decrease), margin,
  # relative (to max(|null|, floor)), and the nulls each can fairly be asked to beat:
  #   concentration vs init and the prior twin (both route by position at most);
  #   collapse vs init only (the prior twin at brake 0 routes uniformly, the strongest
  #     rank-collapser there is, so "collapse beyond it" cannot be won by construction);
  #   stratification vs init, and vs the prior twin only for families whose prior keys are not
  #     constant by construction (`constant_prior_keys`: the SSM, RWKV and AttnRes twins). A null whose keys are equal by
  #     construction (depth at init: RMS-normalised keys with unit gain) has CV ~0: the floor 0.2
  #     (about the norm CV of random Gaussian keys of head width 8, 1/sqrt(2 * 8) = 0.25) makes
  #     the effect an absolute CV increase, not a ratio of 1e3-1e6.
  c.signature = dict(
      concentration=dict(metric="hub_excess", direction=1, margin=0.05, relative=False, floor=0.0,
                         nulls=("init", "prior")),
      collapse=dict(metric="effective_rank_routed", direction=-1, margin=0.10, relative=True,
                    floor=0.0, nulls=("init",)),
      stratification=dict(metric="key_norm_cv", direction=1, margin=0.25, relative=True,
                          floor=0.2, nulls=("init", "prior")),
  )
  # prior twins whose key norms are equal by construction: the SSM's (Delta and B replaced by their
  # sequence means), RWKV's (k = 0: every norm 0) and AttnRes' (RMS-normalised keys, unit gain)
  c.constant_prior_keys = ("ssm", "rwkv", "depth")
  # Descriptive columns (outside every verdict): the shuffled-probe reading (input-specificity: a
  # shuffled probe keeps BOS / [CLS] in place, so it is no null for a sink), v1's shared_sources and
  # Gu et al.'s sink rate (share of (layer, head) whose source-0 importance exceeds 0.3).
  c.descriptive = ("shared_sources", "sink_rate")
  # claim 2: the onset step increases with the brake (Kendall tau, one-sided, over runs)
  c.onset = dict(alpha=0.05)
  # the control battery: planted draws per case ("seeds" of the planted routings)
  c.controls = dict(seeds=8, seq_len=32, n_heads=4)
  return c

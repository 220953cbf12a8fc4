"""Selective SSM (Mamba S6) LM on bigram-backcopy: the brake is an extra decay per step.

    python experiments/sweep.py --config=configs/ssm.py:cpu
    python experiments/sweep.py --config=configs/ssm.py:cpu,frozen

Variants (`config_lib.VARIANTS`): recall, prior (Delta, B, C replaced by their sequence means: the
positional-prior null model), frozen (the selectivity-freeze ablation: Delta, B, C independent of
the input), noescape (no output gate, no depthwise conv).
"""

from rc_jax.engine.config_lib import group_runs_on_old_jaxlib, sweep_config


def _adjust(config, preset):
  if preset == "cpu":  # the SSM scan costs more per step than attention on 2 CPU cores
    config.model.expand = 1
  group_runs_on_old_jaxlib(config, preset)


def get_config(arg: str = "cpu"):
  return sweep_config("ssm", arg, _adjust)

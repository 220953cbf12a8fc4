"""Selective SSM (Mamba S6) LM on bigram-backcopy: the brake is an extra decay per step.

    python experiments/sweep.py --config=configs/ssm.py:cpu
    python experiments/sweep.py --config=configs/ssm.py:cpu,frozen

Variants (`config_lib.VARIANTS`): recall, prior (Delta, B, C replaced by their sequence means: the
positional-prior null model), frozen (the selectivity-freeze ablation: Delta, B, C independent of the
input), noescape (no output gate, no depthwise conv).
"""

from rc_jax.engine.config_lib import sweep_config


def _adjust(config, preset):
  if preset == "cpu":  # the SSM scan costs more per step than attention on 2 CPU cores
    config.model.expand = 1
  # As for RWKV (configs/rwkv.py): on the 2-core CPU (jaxlib 0.10.2) the first execution of 24
  # vmapped SSM runs deadlocks (every thread idle on a futex); groups of 4 run. Execution settings
  # do not change the config's fingerprint.
  if preset != "paper":
    config.execution.update(mode="map", chunk=4)


def get_config(arg: str = "cpu"):
  return sweep_config("ssm", arg, _adjust)

"""Selective SSM (Mamba S6) LM on bigram-backcopy: the brake is an extra decay per step.

    python experiments/sweep.py --config=configs/ssm.py:cpu
    python experiments/sweep.py --config=configs/ssm.py:cpu,frozen

Variants (`config_lib.VARIANTS`): recall, prior (Delta, B, C replaced by their sequence means: the
positional-prior null model), frozen (the selectivity-freeze ablation: Delta, B, C independent of the
input), noescape (no output gate, no depthwise conv).
"""

import jaxlib

from rc_jax.engine.config_lib import sweep_config

_JAXLIB = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])


def _adjust(config, preset):
  if preset == "cpu":  # the SSM scan costs more per step than attention on 2 CPU cores
    config.model.expand = 1
  # As for RWKV (configs/rwkv.py): on the 2-core CPU with jaxlib < 0.12 the first execution of 24
  # vmapped SSM runs deadlocks (every thread idle on a futex); groups of 4 run. Execution settings
  # do not change the config's fingerprint.
  if preset != "paper" and _JAXLIB < (0, 12):
    config.execution.update(mode="map", chunk=4)


def get_config(arg: str = "cpu"):
  return sweep_config("ssm", arg, _adjust)

"""RWKV-4 time-mixing LM on bigram-backcopy: the brake is the carry (extra decay per step).

    python experiments/sweep.py --config=configs/rwkv.py:cpu
    python experiments/sweep.py --config=configs/rwkv.py:cpu,noescape

Variants (`config_lib.VARIANTS`): recall, prior (k = 0: the positional-prior null model), noescape
(no token shift, no sigma(r) gate, no current-token bonus).
"""

from rc_jax.engine.config_lib import group_runs_on_old_jaxlib, sweep_config


def get_config(arg: str = "cpu"):
  return sweep_config("rwkv", arg, group_runs_on_old_jaxlib)

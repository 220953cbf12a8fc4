"""RWKV-4 time-mixing LM on bigram-backcopy: the brake is the carry (extra decay per step).

    python experiments/sweep.py --config=configs/rwkv.py:cpu
    python experiments/sweep.py --config=configs/rwkv.py:cpu,noescape

Variants (`config_lib.VARIANTS`): recall, prior (k = 0: the positional-prior null model), noescape
(no token shift, no sigma(r) gate, no current-token bonus).
"""

from rc_jax.engine.config_lib import sweep_config


def _adjust(config, preset):
  # On the 2-core CPU (jaxlib 0.10.2) the program with 12 or more RWKV runs vmapped together
  # deadlocks in its first execution (every thread idle on a futex); groups of 4 run fine.
  # Execution settings do not change the config's fingerprint.
  if preset != "paper":
    config.execution.update(mode="map", chunk=4)


def get_config(arg: str = "cpu"):
  return sweep_config("rwkv", arg, _adjust)

"""RWKV-4 time-mixing LM on bigram-backcopy: the brake is the carry (extra decay per step).

    python experiments/sweep.py --config=configs/rwkv.py:cpu
    python experiments/sweep.py --config=configs/rwkv.py:cpu,noescape

Variants (`config_lib.VARIANTS`): recall, prior (k = 0: the positional-prior null model), noescape
(no token shift, no sigma(r) gate, no current-token bonus).
"""

import jaxlib

from rc_jax.engine.config_lib import sweep_config

_JAXLIB = tuple(int(part) for part in jaxlib.__version__.split(".")[:2])


def _adjust(config, preset):
  # With jaxlib < 0.12 on a 2-core CPU the program with 12 or more RWKV runs vmapped together
  # deadlocks in its first execution (every thread idle on a futex); groups of 4 run fine. Fixed
  # in jaxlib 0.12 (tests/rwkv_test.py runs 16 vmapped runs under a timeout there). Execution
  # settings do not change the config's fingerprint.
  if preset != "paper" and _JAXLIB < (0, 12):
    config.execution.update(mode="map", chunk=4)


def get_config(arg: str = "cpu"):
  return sweep_config("rwkv", arg, _adjust)

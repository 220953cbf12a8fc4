"""Softmax attention LM on bigram-backcopy: sinks vs the positional brake.

    python experiments/sweep.py --config=configs/attention.py:cpu
"""

from rc_jax.config_lib import base_config


def get_config(preset: str = "cpu"):
  return base_config("attention", preset or "cpu")

"""Softmax attention LM on bigram-backcopy: sinks vs the positional brake.

    python experiments/sweep.py --config=configs/attention.py:cpu
    python experiments/sweep.py --config=configs/attention.py:cpu,recall,prior

The argument is a preset (tiny | cpu | paper) and optional variants (`config_lib.VARIANTS`):
recall (associative recall instead of bigram-backcopy), prior (content score removed: the
positional-prior null model), cosine, distance (the norm-aware score), sigmoid (no normalisation).
"""

from rc_jax.engine.config_lib import sweep_config


def get_config(arg: str = "cpu"):
  return sweep_config("attention", arg)
